"""Tiles: enhance a frame piece by piece so that memory is bounded by the tile, not the frame.

Each tile is enhanced with `overlap` pixels of context on every side (cut at the frame's border)
and only its core is kept. When the overlap covers the model's receptive field the result equals
the untiled one: the core's outputs never see where the tile ends. Tile corners sit on multiples
of ALIGN so that strided models (STDF's U-Net, RFDA's padding to 8) sample the same grid as on the
whole frame. A recurrent model keeps one frame-sized hidden state that its tiles read and update
(TiledState).

RECEPTIVE_RADIUS is how far (in pixels, Chebyshev) a change of one input pixel reaches the output,
measured with `receptive_radius` on weights made non-trivial (tests/test_enhance.py re-measures
it for the small models). Deformable convolutions sample at learned offsets, so for STDF it is
what the measured weights gave, and the default overlap adds a margin. Some models see the whole
frame, and no overlap makes their tiles exact: the DSTA blocks of RFDA (stdf_dsta, stdf_rf, rfda)
weight channels by a global average, NL-ConvLSTM's non-local warp searches every block of the
frame; RFDA's state also carries context from frame to frame. Their tiled output differs from the
untiled one by what benchmarks/bench_enhance.py measures.
"""

import math

import numpy as np

from vcar_tf.errors import VcarError

ALIGN = 8
RECEPTIVE_RADIUS = {"arcnn": 9, "dncnn": 17, "stifn_r3": 13, "stifn_r3l": 20, "stdf_r3": 46, "stdf_r3l": 54}
WHOLE_FRAME = ("stdf_dsta", "stdf_rf", "rfda", "nl_convlstm")  # reach the whole frame (see above)
WHOLE_FRAME_OVERLAP = 64
DEFORM_MARGIN = 16  # extra context for models whose deformable offsets are learned
_DEFORMABLE = ("stdf", "rfda")

# Working memory per pixel of a tile in one frame step (float32, batch 1), from the peak RSS of
# one inference at two sizes on the same machine: (RSS at 1920x1080 - RSS at 832x480) / pixels in
# benchmarks/results/models.md, and (832x480 - 416x240) in benchmarks/results/nonlocal.md for
# NL-ConvLSTM (2026-12-01). tile_for_memory uses them; bench_enhance.py checks the result.
BYTES_PER_PIXEL = {"arcnn": 520, "dncnn": 520, "stifn_r3": 2070, "stifn_r3l": 1830, "stdf_r3": 2100,
                   "stdf_r3l": 2190, "stdf_dsta": 2080, "stdf_rf": 5370, "rfda": 5370, "nl_convlstm": 21600}
DEFAULT_BYTES_PER_PIXEL = 21600
# Untiled, a Keras NL-ConvLSTM streams through its window feature cache, whose terms (features,
# input gates, each frame pair's warp weights) outlive a step: its peak RSS per pixel, (832x480 -
# 416x240) of `bench_nonlocal.py --streaming` in benchmarks/results/nonlocal.md (2026-12-06, float32).
WHOLE_FRAME_BYTES_PER_PIXEL = {"nl_convlstm": 30800}
# Memory that grows with the frame, not the tile, per frame pixel: the decoder's and encoder's
# frames (x264 looks 40 frames ahead), the float32 window of 2R+1 frames, the float64 output and
# its rounding. Fitted to the peak RSS of STDF-R3 at 1920x1080 and 2560x1600, whole and tiled
# (benchmarks/bench_enhance.py at commit bcc722d, 2026-12-01).
FRAME_BYTES_PER_PIXEL = 160
# The share of --max_memory planned for; the rest covers what the estimate misses (the allocator
# keeps memory freed by tiles of other shapes). At 100% STDF-R3 at 2560x1600 peaked at 4887 MB
# and NL-ConvLSTM at 1080p at 4204 MB under --max_memory 4G (same run).
HEADROOM = 0.8


def default_overlap(name):
    """The overlap that covers a registered model's receptive field, rounded up to ALIGN
    (WHOLE_FRAME_OVERLAP for models that see the whole frame, and for unknown ones)."""
    if name not in RECEPTIVE_RADIUS:
        return WHOLE_FRAME_OVERLAP
    reach = RECEPTIVE_RADIUS[name] + (DEFORM_MARGIN if name.startswith(_DEFORMABLE) else 0)
    return ALIGN * math.ceil(reach / ALIGN)


def round_tile(tile):
    return max(ALIGN, ALIGN * (int(tile) // ALIGN))


def tile_within_pixels(limit, height, width, tile, overlap):
    """The tile for a model that takes at most `limit` pixels a call (a SavedModel export): `tile`
    (None: whole frames) where its calls fit, else the largest tile whose calls fit; a --tile too
    large for the limit is an error."""
    overlap = ALIGN * math.ceil(overlap / ALIGN)
    if tile is None:
        pixels = height * width
    else:
        pixels = min(height, round_tile(tile) + 2 * overlap) * min(width, round_tile(tile) + 2 * overlap)
    if pixels <= limit:
        return tile
    largest = round_tile(math.isqrt(limit) - 2 * overlap)
    if tile is not None:
        raise VcarError(f"--tile {tile} with {overlap} px overlap makes model calls of more than {limit} pixels, "
                        f"the export's limit: --tile {largest} or less")
    return largest


def bytes_per_pixel(name):
    """A model's working memory per pixel of a tile or frame (DEFAULT_BYTES_PER_PIXEL when unmeasured)."""
    return BYTES_PER_PIXEL.get(name, DEFAULT_BYTES_PER_PIXEL)


def tile_for_memory(budget_bytes, name, fixed_bytes, overlap, states_bytes=lambda tile: 0):
    """The largest tile (a multiple of ALIGN) whose step, and the hidden states of all tiles
    (`states_bytes(tile)`, for a recurrent model), fit `budget_bytes` beside `fixed_bytes` (what the
    process already holds); None when the budget does not even cover that."""
    per_pixel = bytes_per_pixel(name)
    free = HEADROOM * budget_bytes - fixed_bytes
    if free <= 0:
        return None
    side = int(math.sqrt(free / per_pixel)) - 2 * overlap  # the core of a tile with its context
    tile = round_tile(side) if side >= ALIGN else None
    while tile is not None and per_pixel * (tile + 2 * overlap) ** 2 + states_bytes(tile) > free:
        tile = tile - ALIGN if tile > ALIGN else None
    return tile


def states_bytes(height, width, tile, overlap, channels):
    """What a recurrent model's float32 hidden state holds between frames: one frame's (padded to
    ALIGN) and, when tiled, TiledState's row of new cores and band of context rows."""
    if not channels:
        return 0
    padded_width = ALIGN * math.ceil(width / ALIGN)
    rows = ALIGN * math.ceil(height / ALIGN) + (0 if tile is None else tile + overlap + ALIGN)
    return 4 * channels * rows * padded_width


def process_rss_bytes():
    """This process's resident memory now (Linux /proc), 0 where it cannot be read."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) * 1024
    except (OSError, StopIteration):
        return 0


def plan_for_memory(budget_bytes, name, width, height, radius, queued_frames, bytes_per_sample=1, overlap=None,
                    state_channels=0):
    """(tile, fixed bytes) for a width x height stream within `budget_bytes`; the tile is None when
    whole frames fit, 0 when not even the smallest tile does. Beside a tile's working memory stay the
    process now (TF, the model), the float32 window of 2R+1 frames, the YUV frames queued between
    the stages, what else grows with the frame (FRAME_BYTES_PER_PIXEL) and, for a recurrent model
    (`state_channels` > 0), every tile's hidden state."""
    frame = width * height
    fixed = (process_rss_bytes() + 4 * frame * (2 * radius + 1) + queued_frames * frame * 1.5 * bytes_per_sample
             + FRAME_BYTES_PER_PIXEL * frame)
    overlap = default_overlap(name) if overlap is None else overlap
    whole = (max(bytes_per_pixel(name), WHOLE_FRAME_BYTES_PER_PIXEL.get(name, 0)) * frame
             + states_bytes(height, width, None, 0, state_channels))
    if whole <= HEADROOM * budget_bytes - fixed:
        return None, fixed
    tile = tile_for_memory(budget_bytes, name, fixed, overlap,
                           lambda t: states_bytes(height, width, t, overlap, state_channels))
    if tile is not None and tile >= max(width, height):
        return None, fixed
    return (tile if tile is not None else 0), fixed


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
    tile. A recurrent model's state stays one frame-sized array (TiledState): each tile starts from
    the previous frame's state over its context and hands back its core."""
    tile, overlap = round_tile(tile), ALIGN * math.ceil(int(overlap) / ALIGN)

    def run(window, state):
        window = np.asarray(window)
        height, width = window.shape[2:4]
        state = state if state is not None else TiledState()
        out = np.empty((1, height, width, 1), np.float32)
        rows = {}
        for box in tile_boxes(height, width, tile, overlap):
            rows.setdefault(box[0][:2], []).append(box)
        for row in rows.values():
            for i, ((y0, y1, x0, x1), (py0, py1, px0, px1)) in enumerate(row):
                part, tile_state = step(window[:, :, py0:py1, px0:px1], state.read((y0, x0), (py0, px0)))
                out[:, y0:y1, x0:x1] = np.asarray(part)[:, y0 - py0:y1 - py0, x0 - px0:x1 - px0]
                if tile_state is not None:
                    state.hand_back(np.asarray(tile_state), (y0, y1, x0, x1), (py0, px0), (height, width))
            if state.pending:
                core_top, next_core_top = row[0][0][:2]
                state.end_row(core_top, max(0, next_core_top - overlap), next_core_top)  # next context from there
        return out, (state if state.array is not None else None)

    return run


class TiledState:
    """A recurrent model's state over the whole frame, updated tile by tile in place.

    While a row of tiles runs, the frame state still holds the previous frame's values (the row's
    new cores wait in `pending`); before they are written, the rows the next row of tiles reads as
    context above its cores are kept aside (`band`), so every tile reads only the previous frame's
    state, also where the overlap reaches above the row just written. Memory: one frame's state,
    one row of cores and one band of `overlap` rows."""

    def __init__(self):
        self.array, self.band, self.band_top, self.pending = None, None, 0, []
        self.shapes = {}  # core corner -> its tile's state shape (the context, padded as the model pads it)

    def read(self, core, corner):
        """The previous frame's state over the context at `corner` (top, left) of the tile whose core
        starts at `core`; None at the start."""
        (core_top, _), (top, left) = core, corner
        shape = self.shapes.get(core)
        if self.array is None or shape is None:
            return None
        rows, cols = shape[1], shape[2]
        below = self.array[:, core_top:top + rows, left:left + cols]
        if core_top == top:
            return below
        return np.concatenate([self.band[:, top - self.band_top:, left:left + cols], below], axis=1)

    def hand_back(self, tile_state, core, corner, frame):
        """Keep a tile's new state over its core (and over the padding past the frame's last row or
        column, where the tile is the frame's last)."""
        (y0, y1, x0, x1), (top, left), (height, width) = core, corner, frame
        self.shapes[(y0, x0)] = tile_state.shape
        y1 = y1 if y1 < height else top + tile_state.shape[1]
        x1 = x1 if x1 < width else left + tile_state.shape[2]
        self.pending.append(((y0, y1, x0, x1), tile_state[:, y0 - top:y1 - top, x0 - left:x1 - left]))

    def end_row(self, core_top, next_top, next_core_top):
        """Write the new cores of the row starting at core_top, keeping the previous frame's rows
        next_top..next_core_top: those above core_top are already this frame's in the array, and
        come from the band kept at the row before."""
        if self.array is not None:
            kept = self.array[:, max(next_top, core_top):next_core_top]
            if next_top < core_top and self.band is not None:
                kept = np.concatenate([self.band[:, next_top - self.band_top:core_top - self.band_top], kept], axis=1)
            self.band, self.band_top = kept.copy(), next_top
        rows = max(y1 for (_, y1, _, _), _ in self.pending)
        cols = max(x1 for (_, _, _, x1), _ in self.pending)
        channels = self.pending[0][1].shape[-1]
        if self.array is None or self.array.shape[1] < rows or self.array.shape[2] < cols:
            grown = np.zeros((1, max(rows, 0 if self.array is None else self.array.shape[1]),
                              max(cols, 0 if self.array is None else self.array.shape[2]), channels), np.float32)
            if self.array is not None:
                grown[:, :self.array.shape[1], :self.array.shape[2]] = self.array
            self.array = grown
        for (y0, y1, x0, x1), values in self.pending:
            self.array[:, y0:y1, x0:x1] = values
        self.pending = []


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
