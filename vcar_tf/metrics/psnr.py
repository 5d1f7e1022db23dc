"""Y-PSNR per frame: 10*log10(1/MSE) on float values in [0, 1], no rounding first, at most 60 dB."""

import numpy as np


def to_unit(x):
    """uint8 planes to float64 in [0, 1]; float inputs are taken as already in [0, 1]."""
    x = np.asarray(x)
    return x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)


# libvmaf's ceiling for 8-bit video (6 * 8 + 12 dB): an identical frame (a fade's black frames
# survive compression exactly) scores this, not inf, so a sequence's mean and ΔPSNR stay finite.
PSNR_CEILING_DB = 60.0


def psnr_y(reference, test):
    """PSNR of one frame in dB, at most PSNR_CEILING_DB."""
    mse = np.mean((to_unit(reference) - to_unit(test)) ** 2)
    return PSNR_CEILING_DB if mse <= 10.0 ** (-PSNR_CEILING_DB / 10) else float(10.0 * np.log10(1.0 / mse))
