"""Whole-sequence inference and its metrics, shared by training validation and evaluation."""

import sys

import numpy as np
from tqdm import tqdm

from vcar_tf.streaming import enhance_frames
from vcar_tf.report import frame_metrics, sequence_row


def inference_fn(model):
    """`model(x, training=False)` as one tf.function traced for any H and W.

    Eager Keras inference keeps per-call buffers: DnCNN on one 1920x1080 frame went past 24 GB
    and was killed, while this graph peaks at 1.7 GB (benchmarks/bench_models.py measures it)."""
    import tensorflow as tf

    if not hasattr(model, "layers"):  # already a graph (a SavedModel signature)
        return model
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def enhance_luma(model, seq, radius):
    """Yield the enhanced Y planes (H, W) float in [0, 1] of every frame of a sequence, streamed
    (vcar_tf.streaming): clipped windows, a recurrent model's state carried from frame to frame."""
    if not getattr(model, "recurrent", False) and len(getattr(model, "output_shape", ())) == 5:
        return _enhance_whole_clip(model, seq)  # a clip-to-clip model without step(): one call
    frames = (seq.y(t).astype(np.float32) / 255.0 for t in range(seq.num_frames))
    return enhance_frames(model, frames, radius)


def _enhance_whole_clip(model, seq):
    clip = np.expand_dims(seq.luma()[:].astype(np.float32) / 255.0, (0, -1))
    for frame in np.asarray(inference_fn(model)(clip), dtype=np.float64)[0, ..., 0]:
        yield np.clip(frame, 0.0, 1.0)


def enhance_sequence(model, pair, radius):
    """enhance_luma over the compressed side of a dataset pair."""
    return enhance_luma(model, pair.open()[1], radius)


def evaluate_pairs(model, pairs, radius, split="test"):
    """Report rows (with Δ columns) and per-frame curves for every pair."""
    rows, curves = [], {}
    opened = [(pair, *pair.open()) for pair in pairs]
    bar = tqdm(total=sum(raw.num_frames for _, raw, _ in opened), desc=f"evaluate {split}", unit="frame",
               file=sys.stderr, leave=False)
    for pair, raw, comp in opened:
        psnr_c, ssim_c = frame_metrics(iter(raw.luma()), iter(comp.luma()))
        psnr_e, ssim_e = frame_metrics(iter(raw.luma()), _counted(enhance_luma(model, comp, radius), bar))
        rows.append(sequence_row(split, pair.name, raw.width, raw.height, psnr_c, ssim_c, psnr_e, ssim_e))
        curves[(split, pair.name)] = {"compressed": psnr_c, "enhanced": psnr_e}
    bar.close()
    return rows, curves


def _counted(frames, bar):
    for frame in frames:
        bar.update(1)
        yield frame
