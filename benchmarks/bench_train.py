"""Training throughput of every registered model at the preset recipe (scripts/train_preset.sh:
batch 16, 64x64 crops, L2, Adam 5e-4 with 200 warm-up steps and cosine decay), input pipeline
included: the trainer's own batches (Trainer.batches) and step (Trainer.train_step_fn), as
Trainer.run calls them, on a prepared dataset.

    python benchmarks/bench_train.py --data data/presets [--models stdf_r3 rfda] [--steps 6]
        [--rounds 1] [--variants "" mixed_precision=true] [--out benchmarks/results/train.md [--append]]
    python benchmarks/bench_train.py --data data/presets --models stdf_r3 --loss_steps 200 --losses_out L.json
    python benchmarks/bench_train.py --data data/presets --models stdf_r3 --bound [--repeats 5] [--steps 6]
    python benchmarks/bench_train.py --compare_losses A.json B.json [--out F.md [--append]]

A timed step is what one iteration of Trainer.run's loop costs: the next batch, the optimizer
step and the loss read back (no checkpoint, summary or validation). Each (model, variant) runs in
its own process: one warm-up step (tracing), then --steps timed steps; with --rounds R the
variants of a model alternate R times (A, B, A, B...), so a slow spell of a shared machine hits
them alike. --variants are TrainConfig overrides (KEY=VALUE,...; "" is the recipe itself).
--loss_steps N runs N steps from step 0 and writes their losses (and step times) to
--losses_out: the same seed and data, so two code versions' curves can be compared;
--compare_losses A.json B.json compares two such files (B against A): the steps they agree on bit
for bit from step 0, B's relative difference from A per step, and each one's mean over the last 50.
--bound times each model's conv layers on their own, forward and the gradients a step needs, at
the recipe in fp32 and bf16, against the step and against the rate of one well-shaped conv.
--profile N traces N steps (after the warm-up) with TF's profiler and lists where the time goes,
by kind of op (op time summed over TF's threads, so it adds up to more than the wall time), and how much
of the step's wall time no op ran (a core idle, or XLA's kernels running).
"""

import contextlib
import dataclasses
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from machine import arg_parser, publish, run_as_child, run_child, traced_op_seconds  # noqa: E402

DEFAULT_MODELS = ("stdf_r3", "stdf_dsta", "rfda", "stifn_r3", "dncnn", "arcnn", "nl_convlstm")
RECIPE = {"qp": 37, "batch": 16, "patch": 64, "steps": 5600, "lr": 5e-4, "warmup_steps": 200, "loss": "l2",
          "checkpoint_every": 200, "export": False}


def parse_variant(variant):
    """'mixed_precision=true,seed=1' -> TrainConfig overrides of the field's type."""
    from vcar_tf.train.config import TrainConfig

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    overrides = {}
    for item in filter(None, variant.split(",")):
        key, value = item.split("=", 1)
        default = getattr(TrainConfig(), key) if key in fields else None
        if isinstance(default, bool):
            overrides[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(default, (int, float)):
            overrides[key] = type(default)(value)
        else:  # str or Optional: a number where it reads as one
            overrides[key] = None if value == "" else value
            for kind in (int, float):
                with contextlib.suppress(ValueError):
                    overrides[key] = kind(value)
                    break
    return overrides


def make_trainer(name, data, variant, model_dir):
    from vcar_tf.train.config import TrainConfig
    from vcar_tf.train.trainer import Trainer

    return Trainer(TrainConfig(**{**RECIPE, "model": name, "data": data, "model_dir": model_dir,
                                  **parse_variant(variant)}))


def child_train(name, data, variant, steps, losses_out="-"):
    """Time `steps` steps after one warm-up step (or, with losses_out, record every step from 0)."""
    import time

    with tempfile.TemporaryDirectory(prefix="bench-train-") as run_dir:
        trainer = make_trainer(name, data, "" if variant == "-" else variant, run_dir)
        cfg = trainer.cfg
        clip = (cfg.clip_length or trainer.spec.clip_length) if trainer.spec.recurrent else 1
        it, step = trainer.batches(0), trainer.train_step_fn()
        seconds, losses = [], []
        for i in range(steps + (losses_out == "-")):
            start = time.perf_counter()
            x, y = next(it)
            losses.append(float(step(x, y)))
            seconds.append(time.perf_counter() - start)
        if losses_out == "-":
            seconds, losses = seconds[1:], losses[1:]
        else:
            from vcar_tf.fileutil import write_text_atomic

            write_text_atomic(losses_out, json.dumps({"model": name, "variant": variant, "losses": losses,
                                                      "seconds": seconds}))
        del it
    print(json.dumps({"seconds": seconds, "pixels": cfg.batch * cfg.patch ** 2 * clip}))


def op_kind(name):
    """'scope/op:Type' of a profiler event -> the kind it is counted under (gradients apart)."""
    scope, kind = name.rsplit(":", 1)
    if "offset_mask" in scope and "Conv2D" in kind:  # the STDF family's 189-channel head
        kind = "offset/mask head " + kind
    return kind + (" (gradient)" if "gradient_tape" in scope and "Grad" not in kind else "")


def child_profile(name, data, variant, steps):
    """Seconds per kind of op per step, over `steps` profiled steps after one warm-up step."""
    import time

    with tempfile.TemporaryDirectory(prefix="bench-train-") as run_dir:
        trainer = make_trainer(name, data, "" if variant == "-" else variant, os.path.join(run_dir, "run"))
        it, step = trainer.batches(0), trainer.train_step_fn()
        float(step(*next(it)))
        waits = []

        def timed_step():
            start = time.perf_counter()
            batch = next(it)
            waits.append(time.perf_counter() - start)
            float(step(*batch))

        ops, wall, idle = traced_op_seconds(timed_step, steps, os.path.join(run_dir, "trace"))
        it = None  # the dataset iterator goes before its temporary folder
    kinds = {}
    for op, seconds in ops.items():
        kinds[op_kind(op)] = kinds.get(op_kind(op), 0.0) + seconds
    print(json.dumps({"kinds": kinds, "wall": wall, "idle": idle, "input_wait": float(np.mean(waits))}))


def conv_flops(layer, inputs, outputs):
    """Multiply-adds x 2 of one forward call of a conv layer (Conv2D, Conv2DTranspose, DeformConv2D)."""
    kernel = layer.kernel if hasattr(layer, "kernel") else layer.weights[0]
    per_pixel = int(np.prod(kernel.shape[:3])) * int(kernel.shape[3])
    if "Transpose" in type(layer).__name__:  # each input pixel meets the whole kernel
        return 2 * int(np.prod(inputs[0].shape[:3])) * per_pixel
    return 2 * int(np.prod(outputs.shape[:3])) * per_pixel


def child_bound(name, precision, repeats):
    """The model's conv layers alone, one after another at the recipe's batch and crop: each layer's
    forward and the gradients a training step needs of it (its weights always; its inputs where a
    trainable weight lies upstream), timed on its own; and one 3x3 64 -> 64 conv for comparison."""
    import keras
    import tensorflow as tf

    from machine import finished, timed_calls
    from vcar_tf import models
    from vcar_tf.models.blocks import DeformConv2D

    if precision == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = models.build(name)
    kinds = (keras.layers.Conv2D, keras.layers.Conv2DTranspose, DeformConv2D)
    layers = [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, kinds)]
    spec = models.spec(name)
    frames = 2 * spec.radius + 1
    x = tf.random.stateless_uniform([RECIPE["batch"], frames, RECIPE["patch"], RECIPE["patch"], 1], (0, 0))
    probe = keras.Model(model.inputs, [tf.nest.flatten(layer.input) for layer in layers])
    with tf.GradientTape(persistent=True) as tape:
        layer_inputs = probe(x)
    trained_upstream = [[tape.gradient(t, model.trainable_weights, unconnected_gradients="none") for t in ins]
                        for ins in layer_inputs]
    del tape
    rows, total_seconds, total_flops = [], 0.0, 0
    for layer, ins, upstream in zip(layers, layer_inputs, trained_upstream):
        ins = [tf.constant(t) for t in ins]
        layer_input = ins if len(ins) > 1 else ins[0]  # DeformConv2D takes [x, head] (or [x, offset, mask])
        watched = [t for t, grads in zip(ins, upstream) if any(g is not None for g in grads)]

        @tf.function
        def forward_backward(layer=layer, layer_input=layer_input, watched=watched):
            with tf.GradientTape() as tape:
                tape.watch(watched)
                y = layer(layer_input)
                loss = tf.reduce_sum(tf.cast(y, tf.float32))
            return [loss, *tape.gradient(loss, [*layer.trainable_weights, *watched])]

        seconds = float(np.median(timed_calls(lambda: finished(forward_backward()), repeats)))
        flops = conv_flops(layer, ins, layer(layer_input))
        rows.append({"layer": layer.name, "kind": type(layer).__name__, "input_gradient": bool(watched),
                     "seconds": seconds, "forward_gflop": flops / 1e9})
        total_seconds += seconds
        total_flops += flops * (2 + bool(watched))
    # the best-shaped conv for comparison: 3x3, 64 -> 64, forward and both gradients, the same batch
    dtype = tf.bfloat16 if precision == "bf16" else tf.float32
    a = tf.cast(tf.random.stateless_normal([RECIPE["batch"], RECIPE["patch"], RECIPE["patch"], 64], (0, 1)), dtype)
    k = tf.Variable(tf.cast(tf.random.stateless_normal([3, 3, 64, 64], (0, 2)) * 0.05, dtype))

    @tf.function
    def reference():
        with tf.GradientTape() as tape:
            tape.watch(a)
            loss = tf.reduce_sum(tf.cast(tf.nn.conv2d(a, k, 1, "SAME"), tf.float32))
        return tape.gradient(loss, [a, k])

    reference_seconds = float(np.median(timed_calls(lambda: finished(reference()), repeats)))
    reference_flops = 3 * 2 * RECIPE["batch"] * RECIPE["patch"] ** 2 * 9 * 64 * 64
    print(json.dumps({"layers": rows, "seconds": total_seconds, "gflop": total_flops / 1e9,
                      "reference_gflop_per_s": reference_flops / reference_seconds / 1e9}))


def bound(args):
    """--bound: each model's conv layers alone against its measured step, in fp32 and bf16."""
    lines = ["| model | precision | step measured, s (median) | speed-up over the fp32 step | conv layers alone, s "
             "(share of the step) | conv GFLOP per step | their rate, GFLOP/s | rate for half the fp32 step | "
             "3x3 64->64 conv's rate |", "|---|---|---|---|---|---|---|---|---|"]
    details = []
    for name in args.models:
        fp32_step = None
        for precision, variant in (("fp32", ""), ("bf16", "mixed_precision=true")):
            b = run_child(__file__, "bound", name, precision, args.repeats)
            r = run_child(__file__, "train", name, args.data, variant or "-", args.steps)
            if "failed" in b or "failed" in r:
                lines.append(f"| {name} | {precision} | failed: {b.get('failed') or r.get('failed')} | | | | | |")
                continue
            step = float(np.median(r["seconds"]))
            fp32_step = step if precision == "fp32" else fp32_step
            speed_up, needed = ((f"{fp32_step / step:.2f}x", f"{b['gflop'] / (fp32_step / 2):.0f}") if fp32_step
                                else ("fp32 failed", ""))
            lines.append(f"| {name} | {precision} | {step:.3f} | {speed_up} | {b['seconds']:.3f} "
                         f"({b['seconds'] / step:.0%}) | {b['gflop']:.1f} | {b['gflop'] / b['seconds']:.0f} | "
                         f"{needed} | {b['reference_gflop_per_s']:.0f} |")
            print(lines[-1], flush=True)
            slow = sorted(b["layers"], key=lambda row: -row["seconds"])[:5]
            details.append(f"- {name} {precision}, the slowest layers: " + "; ".join(
                f"{row['layer']} ({row['kind']}{', input gradient' if row['input_gradient'] else ''}) "
                f"{1000 * row['seconds']:.1f} ms" for row in slow))
    publish("Training: the conv layers alone against the step",
            "At the preset recipe (batch 16, 64x64 crops), each of the model's conv layers (Conv2D, "
            "Conv2DTranspose, the deformable conv) runs on its own on the inputs it gets in the model: its "
            "forward and the gradients a training step needs of it (its weights always, its inputs where a "
            f"trainable weight lies upstream), the median of {args.repeats} calls after a warm-up; the table "
            "gives their sum. 'step measured' is this tree's step (bench_train's timing, "
            f"{args.steps} steps after a warm-up) in the same run. GFLOP count 2 per multiply-add of the "
            "forward, x3 with both gradients (x2 without the input's). 'rate for half the fp32 step' is that "
            "GFLOP count over half the fp32 step (the issue's 2x); the last column is what one 3x3 64 -> 64 conv "
            "(forward and both gradients, the same batch and crop) reaches on its own at that precision.\n\n"
            + "\n".join(lines) + "\n\n" + "\n".join(details) + "\n", args.out, append=args.append)


def compare_losses(args):
    """--compare_losses A.json B.json: how far B's loss curve is from A's, step by step."""
    runs = []
    for path in args.compare_losses:
        with open(path) as f:
            runs.append(json.load(f))
    a, b = (np.asarray(r["losses"], np.float64) for r in runs)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    apart = np.flatnonzero(a != b)
    identical = int(apart[0]) if len(apart) else n
    relative = np.abs(b - a) / np.abs(a)
    tail = slice(max(0, n - 50), n)
    names = [f"{r['model']} {r['variant'] if r['variant'] not in ('', '-') else 'recipe'} ({os.path.basename(p)})"
             for r, p in zip(runs, args.compare_losses)]
    body = (f"A: {names[0]}; B: {names[1]}; {n} steps from step 0.\n\n"
            "| bit-identical steps from step 0 | B's relative difference: step 0 | median | max | "
            f"mean loss of steps {tail.start}-{n - 1}, A | B | B / A |\n|---|---|---|---|---|---|---|\n"
            f"| {identical} | {relative[0]:.2e} | {np.median(relative):.2e} | {relative.max():.2e} | "
            f"{a[tail].mean():.4e} | {b[tail].mean():.4e} | {b[tail].mean() / a[tail].mean():.4f} |\n")
    publish("Training: two loss curves compared", body, args.out, append=args.append)


def summary(seconds):
    a = np.asarray(seconds)
    return float(a.min()), float(np.median(a)), float(a.max())


def main():
    p = arg_parser(__doc__)
    p.add_argument("--data", help="prepared dataset with train/ (and val/), as train_preset.sh's")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    p.add_argument("--steps", type=int, default=6, help="timed steps per process")
    p.add_argument("--rounds", type=int, default=1, help="processes per (model, variant), alternating variants")
    p.add_argument("--variants", nargs="+", default=[""], help="TrainConfig overrides, KEY=VALUE,...")
    p.add_argument("--loss_steps", type=int, default=0)
    p.add_argument("--losses_out", default=None)
    p.add_argument("--compare_losses", nargs=2, metavar=("A.json", "B.json"),
                   help="two --losses_out files: B's curve against A's")
    p.add_argument("--append", action="store_true", help="add to --out instead of replacing it")
    p.add_argument("--profile", type=int, default=0, help="trace this many steps per model: time by kind of op")
    p.add_argument("--bound", action="store_true", help="each model's conv layers alone (fp32, bf16) against its step")
    args = p.parse_args()
    if run_as_child(args, {"train": child_train, "profile": child_profile, "bound": child_bound}):
        return
    if args.compare_losses:
        return compare_losses(args)
    if not args.data:
        p.error("--data is required")
    if args.bound:
        return bound(args)
    if args.loss_steps:
        if len(args.models) != 1 or len(args.variants) != 1 or not args.losses_out:
            p.error("--loss_steps takes one model, one variant and --losses_out")
        r = run_child(__file__, "train", args.models[0], args.data, args.variants[0] or "-", args.loss_steps,
                      os.path.abspath(args.losses_out))
        print(r.get("failed") or f"{args.loss_steps} losses in {args.losses_out}")
        return
    if args.profile:
        return profile(args)
    lines = ["| model | variant | s/step min | median | max | steps/s (median) | target Mpixels/s | steps timed |",
             "|---|---|---|---|---|---|---|---|"]
    for name in args.models:
        times = {v: [] for v in args.variants}
        pixels, failed = {}, {}  # per variant: one may change the batch, patch or clip length
        for _ in range(args.rounds):
            for v in args.variants:
                r = run_child(__file__, "train", name, args.data, v or "-", args.steps)
                if "failed" in r:
                    failed[v] = r["failed"]
                else:
                    times[v] += r["seconds"]
                    pixels[v] = r["pixels"]
        for v in args.variants:
            label = v or "recipe"
            if not times[v]:
                lines.append(f"| {name} | {label} | failed: {failed.get(v, '?')} | | | | | 0 |")
            else:
                lo, med, hi = summary(times[v])
                lines.append(f"| {name} | {label} | {lo:.3f} | {med:.3f} | {hi:.3f} | {1 / med:.3f} | "
                             f"{pixels[v] / med / 1e6:.3f} | {len(times[v])} |")
            print(lines[-1], flush=True)
    publish("Training throughput at the preset recipe",
            f"Recipe of `scripts/train_preset.sh`: batch 16, 64x64 crops, L2, Adam 5e-4 (warm-up, cosine), fp32 "
            f"unless a variant says otherwise; data `{args.data}`. One step = the trainer's next batch (its tf.data "
            f"pipeline) + its step function + the loss read back. Per (model, variant): {args.rounds} process(es), "
            f"variants alternating, each one warm-up step then {args.steps} timed steps. Target pixels per step = "
            f"batch x 64² (x the clip length for the recurrent models: 15 frames for rfda and stdf_rf unless a "
            f"variant sets clip_length).\n\n"
            + "\n".join(lines) + "\n", args.out, append=args.append)


def profile(args):
    parts = []
    for name in args.models:
        for v in args.variants:
            r = run_child(__file__, "profile", name, args.data, v or "-", args.profile)
            if "failed" in r:
                parts.append(f"{name} ({v or 'recipe'}): failed: {r['failed']}")
                continue
            total = sum(r["kinds"].values())
            rows = sorted(r["kinds"].items(), key=lambda kv: -kv[1])
            table = ["| kind of op | ms per step | share |", "|---|---|---|"]
            table += [f"| {k} | {1000 * t:.1f} | {100 * t / total:.1f}% |" for k, t in rows if t >= 0.002 * total]
            parts.append(f"### {name} ({v or 'recipe'})\n\nOp time {1000 * total:.0f} ms per step summed over TF's "
                         f"threads; the step's wall time in the trace {1000 * r['wall']:.0f} ms, of which "
                         f"{1000 * r['idle']:.0f} ms with no op running (XLA's kernels are not ops), and waiting "
                         f"for the input pipeline's next batch {1000 * r['input_wait']:.1f} ms. Kinds under 0.2% "
                         "are left out.\n\n" + "\n".join(table))
            print(parts[-1], flush=True)
    publish("Where a training step's time goes", f"TF profiler trace of {args.profile} steps after one warm-up, "
            f"at the preset recipe, through the trainer's batches and step.\n\n" + "\n\n".join(parts) + "\n",
            args.out, append=args.append)


if __name__ == "__main__":
    main()
