"""Whole-sequence inference and its metrics, shared by training validation and evaluation."""

import collections
import concurrent.futures
import sys

import numpy as np
from tqdm import tqdm

from vcar_tf.errors import VcarError
from vcar_tf.export.names import MAX_FRAME_PIXELS
from vcar_tf.inference.streaming import enhance_frames
from vcar_tf.metrics.sequence import frame_metrics, sequence_row

MAX_PENDING_FRAMES = 8  # enhanced frames waiting for their metrics on the worker thread


def enhance_luma(model, seq, radius, batch=1):
    """Yield the enhanced Y planes (H, W) float in [0, 1] of every frame of a sequence, streamed
    (vcar_tf.inference.streaming): clipped windows, a recurrent model's state carried from frame
    to frame; `batch` frames per call where the model allows it."""
    frames = (seq.y(t).astype(np.float32) / 255.0 for t in range(seq.num_frames))
    return enhance_frames(model, frames, radius, batch=batch)


def enhance_sequence(model, pair, radius):
    """enhance_luma over the compressed side of a dataset pair."""
    return enhance_luma(model, pair.open()[1], radius)


def evaluate_pairs(model, pairs, radius, split="test", batch=1):
    """Report rows (with Δ columns) and per-frame curves for every pair. The metrics of each sequence
    are computed on a worker thread while the model enhances the next frames; `batch`: frames per
    model call where the model allows it (vcar_tf.inference.streaming.StreamingEnhancer)."""
    rows, curves = [], {}
    opened = [(pair, *pair.open()) for pair in pairs]
    for pair, raw, _ in opened:
        if raw.width * raw.height > MAX_FRAME_PIXELS:
            raise VcarError(f"{pair.name}: {raw.width}x{raw.height} frames are larger than the {MAX_FRAME_PIXELS} "
                            f"pixels evaluation takes whole (vcar-enhance --tile enhances larger ones)")
    bar = tqdm(total=sum(raw.num_frames for _, raw, _ in opened), desc=f"evaluate {split}", unit="frame",
               file=sys.stderr, leave=False)
    # closed on an error too, so an error line starts a line of its own
    with bar, concurrent.futures.ThreadPoolExecutor(1) as metrics:
        for pair, raw, comp in opened:
            compressed = metrics.submit(frame_metrics, iter(raw.luma()), iter(comp.luma()))
            pending, done = collections.deque(), []
            for t, y in enumerate(_counted(enhance_luma(model, comp, radius, batch), bar)):
                pending.append(metrics.submit(frame_metrics, [raw.y(t)], [y]))
                while len(pending) > MAX_PENDING_FRAMES:  # bounds the enhanced frames held
                    done.append(pending.popleft().result())
            done += [f.result() for f in pending]
            if len(done) != raw.num_frames:
                raise VcarError(f"{pair.name}: {len(done)} enhanced frames for {raw.num_frames}")
            psnr_c, ssim_c = compressed.result()
            psnr_e, ssim_e = (np.concatenate(m) for m in zip(*done))
            rows.append(sequence_row(split, pair.name, raw.width, raw.height, psnr_c, ssim_c, psnr_e, ssim_e))
            curves[(split, pair.name)] = {"compressed": psnr_c, "enhanced": psnr_e}
    return rows, curves


def _counted(frames, bar):
    for frame in frames:
        bar.update(1)
        yield frame
