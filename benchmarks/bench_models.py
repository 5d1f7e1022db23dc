"""Per model: parameters, multiply-accumulates per frame, training steps/s and samples/s,
the input pipeline's rate against what training consumes, inference FPS and peak RSS at
416x240, 832x480 and 1920x1080, on this machine's CPU.

    python benchmarks/bench_models.py [--models arcnn dncnn stifn_r3] [--out benchmarks/results/models.md]

Each inference size runs in its own process so that its peak RSS is its own.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import arg_parser, float_ops_by_type, peak_rss_mb, publish, run_as_child, run_child, timed  # noqa: E402

SIZES = ((416, 240), (832, 480), (1920, 1080))


def child_macs(name, width, height):
    """Multiply-accumulates of one inference at width x height: TF's profiler float-op count of the
    frozen inference graph, halved. It counts every conv, matmul and elementwise op, strided levels
    and the deformable conv's composite (the op the count is taken on) included."""
    os.environ["VCAR_DEFORM_IMPL"] = "composite"
    import tensorflow as tf

    from vcar_tf import models

    model = models.build(name)
    frames = 2 * models.spec(name).radius + 1

    def infer(x):
        if getattr(model, "recurrent", False):  # one frame of the stream
            return model.step(x, model.initial_state(x))[0]
        return model(x, training=False)

    flops = sum(float_ops_by_type(infer, tf.TensorSpec([1, frames, height, width, 1])).values())
    print(json.dumps({"macs": flops / 2}))


def child_inference(name, width, height, repeats):
    import numpy as np

    from vcar_tf import models
    from vcar_tf.inference.streaming import frame_step

    run = frame_step(models.build(name))
    radius = models.spec(name).radius
    x = np.random.default_rng(0).random((1, 2 * radius + 1, height, width, 1), dtype=np.float32)
    seconds = timed(lambda: np.asarray(run(x, None)[0]), repeats)
    print(json.dumps({"fps": 1 / seconds, "rss_mb": peak_rss_mb()}))


def child_training(name, patch, batch, steps, clip_length):
    import numpy as np
    import tensorflow as tf
    import keras

    from vcar_tf import models

    model = models.build(name)
    radius = models.spec(name).radius
    opt = keras.optimizers.Adam(1e-4)
    opt.build(model.trainable_variables)
    recurrent = models.spec(name).clip_length is not None
    frames = clip_length if recurrent else 2 * radius + 1
    x = tf.constant(np.random.default_rng(0).random((batch, frames, patch, patch, 1), dtype=np.float32))
    y = x if recurrent else x[:, radius]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    print(json.dumps({"steps_per_s": 1 / timed(lambda: step().numpy(), steps)}))


def main():
    p = arg_parser(__doc__, repeats=2)
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--train_steps", type=int, default=3)
    p.add_argument("--clip_length", type=int, default=3, help="training clip of the recurrent models")
    args = p.parse_args()
    if run_as_child(args, {"infer": child_inference, "train": child_training, "macs": child_macs}):
        return
    from vcar_tf import models

    from bench_pipeline import pipeline_rate
    from vcar_tf.data.layout import find_pairs, prepared_codec_folder, resolve_datasets
    from vcar_tf.data.pipeline import PipelineConfig

    sample_train = find_pairs(resolve_datasets(None)["train"], 37, prepared_codec_folder(None))
    names = args.models or models.names()
    lines = ["| model | params | MACs/frame 832x480 | train steps/s | train samples/s | pipeline samples/s | "
             "pipeline / training | " + " | ".join(f"FPS {w}x{h} | RSS MB {w}x{h}" for w, h in SIZES) + " |",
             "|---|---|---|---|---|---|---|" + "---|---|" * len(SIZES)]
    for name in names:
        model = models.build(name)
        macs = run_child(__file__, "macs", name, 832, 480)
        macs = f"{macs['macs'] / 1e9:.1f} G" if "macs" in macs else macs["failed"]
        train = run_child(__file__, "train", name, args.patch, args.batch, args.train_steps, args.clip_length)
        clips = {"mode": "clip", "clip_length": args.clip_length} if models.spec(name).recurrent else {}
        feed = pipeline_rate(sample_train, PipelineConfig(radius=models.spec(name).radius, patch=args.patch,
                                                          batch=args.batch, **clips), batches=20)  # what training eats
        if "failed" in train:
            train_cells = f"{train['failed']} | | {feed:.0f} | "
        else:
            consumed = train["steps_per_s"] * args.batch  # windows, or clips for the recurrent models
            train_cells = f"{train['steps_per_s']:.3f} | {consumed:.1f} | {feed:.0f} | {feed / consumed:.0f}x"
        cells = []
        for w, h in SIZES:
            r = run_child(__file__, "infer", name, w, h, args.repeats)
            cells += ["failed", r["failed"]] if "failed" in r else [f"{r['fps']:.2f}", f"{r['rss_mb']:.0f}"]
        lines.append(f"| {name} | {model.count_params():,} | {macs} | {train_cells} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    publish("Models on CPU",
            f"Training at patch {args.patch}, batch {args.batch} (fp32, Adam, synthetic data); inference of "
            f"one frame (batch 1) through `vcar_tf.inference.streaming.frame_step` (a tf.function, as evaluation and "
            f"vcar-enhance run it), mean of {args.repeats} after a warm-up; RSS is the peak of that process. "
            f"The pipeline column is tf.data on the embedded sample train split at the same patch, batch "
            f"and radius; 'pipeline / training' is how many times faster it feeds than training eats. "
            f"MACs are TF's profiler float-op count of the inference graph, halved (deformable convs "
            f"counted on the composite). Recurrent models (rfda, stdf_rf) train on clips of "
            f"{args.clip_length} frames (samples are clips) and infer one frame of a stream (`step`).\n\n"
            + "\n".join(lines) + "\n", args.out)

if __name__ == "__main__":
    main()
