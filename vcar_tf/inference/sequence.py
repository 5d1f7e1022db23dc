"""Whole-sequence inference and its metrics, shared by training validation and evaluation."""

import sys

import numpy as np
from tqdm import tqdm

from vcar_tf.errors import VcarError
from vcar_tf.export.names import MAX_FRAME_PIXELS
from vcar_tf.inference.streaming import enhance_frames
from vcar_tf.metrics.sequence import frame_metrics, sequence_row


def enhance_luma(model, seq, radius):
    """Yield the enhanced Y planes (H, W) float in [0, 1] of every frame of a sequence, streamed
    (vcar_tf.inference.streaming): clipped windows, a recurrent model's state carried from frame
    to frame."""
    frames = (seq.y(t).astype(np.float32) / 255.0 for t in range(seq.num_frames))
    return enhance_frames(model, frames, radius)


def enhance_sequence(model, pair, radius):
    """enhance_luma over the compressed side of a dataset pair."""
    return enhance_luma(model, pair.open()[1], radius)


def evaluate_pairs(model, pairs, radius, split="test"):
    """Report rows (with Δ columns) and per-frame curves for every pair."""
    rows, curves = [], {}
    opened = [(pair, *pair.open()) for pair in pairs]
    for pair, raw, _ in opened:
        if raw.width * raw.height > MAX_FRAME_PIXELS:
            raise VcarError(f"{pair.name}: {raw.width}x{raw.height} frames are larger than the {MAX_FRAME_PIXELS} "
                            f"pixels evaluation takes whole (vcar-enhance --tile enhances larger ones)")
    bar = tqdm(total=sum(raw.num_frames for _, raw, _ in opened), desc=f"evaluate {split}", unit="frame",
               file=sys.stderr, leave=False)
    with bar:  # closed on an error too, so an error line starts a line of its own
        for pair, raw, comp in opened:
            psnr_c, ssim_c = frame_metrics(iter(raw.luma()), iter(comp.luma()))
            psnr_e, ssim_e = frame_metrics(iter(raw.luma()), _counted(enhance_luma(model, comp, radius), bar))
            rows.append(sequence_row(split, pair.name, raw.width, raw.height, psnr_c, ssim_c, psnr_e, ssim_e))
            curves[(split, pair.name)] = {"compressed": psnr_c, "enhanced": psnr_e}
    return rows, curves


def _counted(frames, bar):
    for frame in frames:
        bar.update(1)
        yield frame
