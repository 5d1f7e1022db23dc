"""Export a trained run as a SavedModel that a stock TF Serving loads (stock ops only).

    vcar-export --model_dir RUN --format saved_model --out DIR [--name NAME] [--version N]

Writes DIR/NAME/VERSION/ (TF Serving's layout; VERSION defaults to one more than the largest
there). Signatures:
- serving_default: frames uint8 [2R+1, H, W] (Y, any H and W) -> enhanced uint8 [H, W];
- serve_float: frames float32 [B, 2R+1, H, W, 1] in [0, 1] -> enhanced float32 [B, H, W, 1].

Recurrent models (RFDA, STDF+RF) carry a hidden state, so a stateless server can serve a stream:
- serving_default: frames uint8 [2R+1, H, W], hidden float32 [1, H', W', C] -> enhanced uint8
  [H, W], hidden (the next state); H', W' are H, W rounded up to a multiple of 8, C = 64, and
  the first frame's state is zeros (initial_state returns it);
- step_float: frames float32 [B, 2R+1, H, W, 1], hidden [B, H', W', C] -> enhanced, hidden;
- initial_state: frames float32 [B, 2R+1, H, W, 1] -> hidden zeros;
- serve_clip: clip float32 [B, L, H, W, 1] -> enhanced [B, L, H, W, 1], every frame's window
  clipped inside the clip, the state carried from the first frame to the last.
"""

import argparse
import os
import shutil
import sys
import tempfile

from vcar_tf.errors import VcarError, cli_main
from vcar_tf.fileutil import ensure_writable_dir
from vcar_tf.ops.deform_conv import composite_only


def next_version(base):
    versions = [int(d) for d in os.listdir(base) if d.isdigit()] if os.path.isdir(base) else []
    return max(versions, default=0) + 1


def export_saved_model(model, radius, base_dir, version=None):
    """Write `model` to base_dir/VERSION atomically; returns the version folder."""
    import keras
    import tensorflow as tf

    frames = 2 * radius + 1
    ensure_writable_dir(base_dir)
    version = version or next_version(base_dir)
    target = os.path.join(base_dir, str(version))
    if os.path.exists(target):
        raise VcarError(f"{target} already exists")

    @tf.function(input_signature=[tf.TensorSpec([frames, None, None], tf.uint8, name="frames")])
    def serve_uint8(y_frames):
        x = tf.expand_dims(tf.expand_dims(tf.cast(y_frames, tf.float32) / 255.0, 0), -1)
        y = tf.squeeze(model(x, training=False), axis=[0, 3])
        return {"enhanced": tf.cast(tf.round(tf.clip_by_value(y, 0.0, 1.0) * 255.0), tf.uint8)}

    @tf.function(input_signature=[tf.TensorSpec([None, frames, None, None, 1], tf.float32, name="frames")])
    def serve_float(x):
        return {"enhanced": model(x, training=False)}

    endpoints = {"serving_default": serve_uint8, "serve_float": serve_float}
    if getattr(model, "recurrent", False):
        endpoints = recurrent_endpoints(model, frames)
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=base_dir)
    try:
        with composite_only():  # stock ops only: no custom op in a served graph
            archive = keras.export.ExportArchive()
            archive.track(model)
            for endpoint, fn in endpoints.items():
                archive.add_endpoint(endpoint, fn)
            archive.write_out(os.path.join(tmp, "model"), verbose=False)
        os.replace(os.path.join(tmp, "model"), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def recurrent_endpoints(model, frames):
    """The step, initial-state and whole-clip signatures of a recurrent model (module docstring)."""
    import tensorflow as tf

    window = tf.TensorSpec([None, frames, None, None, 1], tf.float32, name="frames")
    state = tf.TensorSpec([None, None, None, model.out_nc], tf.float32, name="hidden")

    @tf.function(input_signature=[tf.TensorSpec([frames, None, None], tf.uint8, name="frames"),
                                  tf.TensorSpec([1, None, None, model.out_nc], tf.float32, name="hidden")])
    def step_uint8(y_frames, hidden):
        x = tf.expand_dims(tf.expand_dims(tf.cast(y_frames, tf.float32) / 255.0, 0), -1)
        y, hidden = model.step(x, hidden)
        y = tf.squeeze(y, axis=[0, 3])
        return {"enhanced": tf.cast(tf.round(tf.clip_by_value(y, 0.0, 1.0) * 255.0), tf.uint8), "hidden": hidden}

    @tf.function(input_signature=[window, state])
    def step_float(x, hidden):
        y, hidden = model.step(x, hidden)
        return {"enhanced": y, "hidden": hidden}

    @tf.function(input_signature=[window])
    def initial_state(x):
        return {"hidden": model.initial_state(x)}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None, 1], tf.float32, name="clip")])
    def serve_clip(clip):
        return {"enhanced": model(clip, training=False)}

    return {"serving_default": step_uint8, "step_float": step_float, "initial_state": initial_state,
            "serve_clip": serve_clip}


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(prog="vcar-export", description=__doc__.split("\n")[0])
    p.add_argument("--model_dir", required=True, help="a train_main.py run")
    p.add_argument("--format", default="saved_model", choices=["saved_model"])
    p.add_argument("--out", required=True, help="TF Serving model base folder")
    p.add_argument("--name", default=None, help="default: the model's registry name")
    p.add_argument("--version", type=int, default=None)
    args = p.parse_args(argv)
    from vcar_tf import models
    from vcar_tf.evaluate import load_run

    model, cfg = load_run(args.model_dir)
    radius = models.spec(cfg.model).radius if cfg.radius is None else cfg.radius
    path = export_saved_model(model, radius, os.path.join(args.out, args.name or models.spec(cfg.model).name),
                              args.version)
    print(f"exported {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
