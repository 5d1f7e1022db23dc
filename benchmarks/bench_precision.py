"""fp32 against Keras mixed_bfloat16 on this CPU: one 3x3 Conv2D 64->64, forward + backward.

    python benchmarks/bench_precision.py [--size 48] [--batch 8] [--repeats 5] [--out FILE]

Decides whether train_main.py --mixed_precision pays on a machine; each policy runs in its own
process.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import publish  # noqa: E402


def child(policy, size, batch, repeats):
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_global_policy(policy)
    layer = keras.layers.Conv2D(64, 3, padding="same")
    x = tf.random.uniform((batch, size, size, 64))
    layer(x)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y = tf.cast(layer(x), tf.float32)
            loss = tf.reduce_mean(y * y)
        return tape.gradient(loss, layer.trainable_variables)

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        [g.numpy() for g in step()]
    seconds = (time.perf_counter() - start) / repeats
    gflop = 3 * 2 * batch * size * size * 9 * 64 * 64 / 1e9  # forward + two backward convs
    print(json.dumps({"ms": 1000 * seconds, "gflops": gflop / seconds}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.size, args.batch, args.repeats)
    results = {}
    for policy in ("float32", "mixed_bfloat16"):
        out = subprocess.run([sys.executable, __file__, "--child", policy, "--size", str(args.size), "--batch",
                              str(args.batch), "--repeats", str(args.repeats)], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(out.stderr[-2000:])
        results[policy] = json.loads(out.stdout.strip().splitlines()[-1])
    f32, bf16 = results["float32"], results["mixed_bfloat16"]
    publish("fp32 against mixed_bfloat16",
            f"3x3 Conv2D 64->64 on {args.batch}x{args.size}x{args.size}x64, forward + backward, "
            f"mean of {args.repeats}.\n\n| policy | ms | GFLOP/s |\n|---|---|---|\n"
            f"| float32 | {f32['ms']:.1f} | {f32['gflops']:.0f} |\n"
            f"| mixed_bfloat16 | {bf16['ms']:.1f} | {bf16['gflops']:.0f} |\n\n"
            f"bfloat16 / float32 speed: {f32['ms'] / bf16['ms']:.2f}x\n", args.out)

if __name__ == "__main__":
    main()
