"""Tiles: enhance a frame piece by piece so that memory is bounded by the tile, not the frame.

Each tile is enhanced with `overlap` pixels of context on every side (cut at the frame's border)
and only its core is kept. When the overlap covers the model's receptive field the result equals
the untiled one: the core's outputs never see where the tile ends. Tile corners sit on multiples
of ALIGN so that strided models (STDF's U-Net, RFDA's padding to 8) sample the same grid as on the
whole frame. A recurrent model keeps one hidden state per tile.

RECEPTIVE_RADIUS is how far (in pixels, Chebyshev) a change of one input pixel reaches the output,
measured with `receptive_radius` on weights made non-trivial (tests/test_enhance.py re-measures
it for the small models). Deformable convolutions sample at learned offsets, so for STDF and
RFDA it is what the measured weights gave, and the default overlap adds a margin. NL-ConvLSTM's
non-local warp searches the whole frame: no overlap makes it exact, and the difference is measured
(benchmarks/bench_enhance.py). RFDA's state carries context from frame to frame, so its reach
grows with time: tiled output drifts from the untiled one near tile edges (also measured).
"""

import math

import numpy as np

ALIGN = 8
RECEPTIVE_RADIUS = {"arcnn": 9, "dncnn": 17, "stifn_r3": 13, "stifn_r3l": 20, "stdf_r3": 46, "stdf_r3l": 54,
                    "stdf_dsta": 60, "stdf_rf": 60, "rfda": 60, "nl_convlstm": 64}
DEFORM_MARGIN = 16  # extra context for models whose deformable offsets are learned
_DEFORMABLE = ("stdf", "rfda")

# Peak bytes of working memory per pixel of a tile (one frame step, float32) and the fixed part
# (TF, the model, the frame buffers of a 1080p stream), used by tile_for_memory: measured with
# `python benchmarks/bench_enhance.py --calibrate` (see benchmarks/results/enhance.md).
BYTES_PER_PIXEL = {"arcnn": 560, "dncnn": 560, "stifn_r3": 2200, "stifn_r3l": 2200, "stdf_r3": 2300,
                   "stdf_r3l": 2400, "stdf_dsta": 2300, "stdf_rf": 5800, "rfda": 5800, "nl_convlstm": 9000}
DEFAULT_BYTES_PER_PIXEL = 9000


def default_overlap(name):
    """The overlap that covers a registered model's receptive field, rounded up to ALIGN."""
    reach = RECEPTIVE_RADIUS.get(name, 64) + (DEFORM_MARGIN if name.startswith(_DEFORMABLE) else 0)
    return ALIGN * math.ceil(reach / ALIGN)


def round_tile(tile):
    return max(ALIGN, ALIGN * (int(tile) // ALIGN))


def tile_for_memory(budget_bytes, name, fixed_bytes, overlap):
    """The largest tile (a multiple of ALIGN) whose step fits `budget_bytes` beside `fixed_bytes`
    (what the process already holds); None when the budget does not even cover that."""
    per_pixel = BYTES_PER_PIXEL.get(name, DEFAULT_BYTES_PER_PIXEL)
    free = budget_bytes - fixed_bytes
    if free <= 0:
        return None
    side = int(math.sqrt(free / per_pixel)) - 2 * overlap  # the core of a tile with its context
    return round_tile(side) if side >= ALIGN else None


def tile_boxes(height, width, tile, overlap):
    """[((y0, y1, x0, x1) core, (y0, y1, x0, x1) with context)] covering a height x width frame."""
    boxes = []
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            boxes.append(((y0, y1, x0, x1), (max(0, y0 - overlap), min(height, y1 + overlap),
                                             max(0, x0 - overlap), min(width, x1 + overlap))))
    return boxes


def tiled_step(step, tile, overlap):
    """A frame step (window (1, 2R+1, H, W, 1), state) -> (enhanced (1, H, W, 1), state) run tile by
    tile; the state is the list of every tile's own state."""
    tile, overlap = round_tile(tile), ALIGN * math.ceil(int(overlap) / ALIGN)

    def run(window, states):
        window = np.asarray(window)
        height, width = window.shape[2:4]
        boxes = tile_boxes(height, width, tile, overlap)
        states = list(states) if states is not None else [None] * len(boxes)
        out = np.empty((1, height, width, 1), np.float32)
        for i, ((y0, y1, x0, x1), (py0, py1, px0, px1)) in enumerate(boxes):
            part, states[i] = step(window[:, :, py0:py1, px0:px1], states[i])
            out[:, y0:y1, x0:x1] = np.asarray(part)[:, y0 - py0:y1 - py0, x0 - px0:x1 - px0]
        return out, states

    return run


def receptive_radius(step, frames, size=144, seed=0):
    """How far a change of one pixel (at the centre of any of the `frames` input frames of a
    size x size window) reaches the output of `step`, in pixels."""
    rng = np.random.default_rng(seed)
    x = rng.random((1, frames, size, size, 1), dtype=np.float32)
    base = np.asarray(step(x, None)[0])[0, ..., 0]
    reach, c = 0, size // 2
    for f in range(frames):
        y = x.copy()
        y[0, f, c, c, 0] += 0.5
        rows, cols = np.nonzero(np.asarray(step(y, None)[0])[0, ..., 0] != base)
        if len(rows):
            reach = max(reach, int(np.abs(rows - c).max()), int(np.abs(cols - c).max()))
    return reach
