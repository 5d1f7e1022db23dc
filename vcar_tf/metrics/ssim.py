"""SSIM identical to scikit-image's structural_similarity(data_range=1.0) with its defaults
(7x7 uniform window, sample covariance, mean over the valid interior), plus the Gaussian
MATLAB-style variant (11x11, sigma 1.5, population covariance) as an option."""

import numpy as np
from scipy import ndimage

from vcar_tf.metrics.psnr import to_unit

_K1, _K2 = 0.01, 0.03


def ssim(reference, test, gaussian=False, data_range=1.0):
    """Mean SSIM of two 2-D frames (uint8 or float in [0, 1])."""
    x, y = to_unit(reference), to_unit(test)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"ssim needs two 2-D frames of one shape, got {x.shape} and {y.shape}")
    if gaussian:
        win = 11
        filt = lambda a: ndimage.gaussian_filter(a, sigma=1.5, truncate=3.5)  # noqa: E731
        cov_norm = 1.0
    else:
        win = 7
        filt = lambda a: ndimage.uniform_filter(a, size=win)  # noqa: E731
        cov_norm = win * win / (win * win - 1.0)
    if min(x.shape) < win:
        raise ValueError(f"frames smaller than the {win}x{win} SSIM window")
    ux, uy = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - ux * ux)
    vy = cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean(dtype=np.float64))
