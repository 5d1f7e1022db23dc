"""Quality fluctuation of a per-frame PSNR curve: SD and peak-valley difference (MFQE 1.0/2.0)."""

import numpy as np


def psnr_sd(curve):
    """Standard deviation of the per-frame PSNR curve (population, ddof=0)."""
    return float(np.std(np.asarray(curve, dtype=np.float64)))


def peak_valley_difference(curve):
    """Mean over the curve's peaks of peak - mean(nearest preceding valley, nearest following valley).

    Peaks and valleys are strict local extrema of interior frames; a peak with a valley on one
    side only uses that one. Returns 0.0 when the curve has no peak with a valley.
    """
    c = np.asarray(curve, dtype=np.float64)
    if c.size < 3:
        return 0.0
    mid = c[1:-1]
    peaks = np.flatnonzero((mid > c[:-2]) & (mid > c[2:])) + 1
    valleys = np.flatnonzero((mid < c[:-2]) & (mid < c[2:])) + 1
    diffs = []
    for p in peaks:
        before, after = valleys[valleys < p], valleys[valleys > p]
        sides = ([c[before[-1]]] if before.size else []) + ([c[after[0]]] if after.size else [])
        if sides:
            diffs.append(c[p] - np.mean(sides))
    return float(np.mean(diffs)) if diffs else 0.0
