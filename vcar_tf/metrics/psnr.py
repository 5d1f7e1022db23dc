"""Y-PSNR per frame: 10*log10(1/MSE) on float values in [0, 1], no rounding first."""

import numpy as np


def to_unit(x):
    """uint8 planes to float64 in [0, 1]; float inputs are taken as already in [0, 1]."""
    x = np.asarray(x)
    return x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)


def psnr_y(reference, test):
    """PSNR of one frame in dB; inf for identical frames."""
    mse = np.mean((to_unit(reference) - to_unit(test)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))
