"""Per-frame and per-sequence metrics of a (raw, test) pair of Y-plane streams."""

import numpy as np

from vcar_tf.metrics.fluctuation import peak_valley_difference, psnr_sd
from vcar_tf.metrics.psnr import psnr_y
from vcar_tf.metrics.ssim import ssim


def frame_metrics(raw_frames, test_frames, gaussian_ssim=False):
    """Per-frame (psnr, ssim) arrays of two equal-length iterables of Y planes."""
    psnr, ssim_ = [], []
    for ref, test in zip(raw_frames, test_frames, strict=True):
        psnr.append(psnr_y(ref, test))
        ssim_.append(ssim(ref, test, gaussian=gaussian_ssim))
    return np.array(psnr), np.array(ssim_)


def sequence_row(split, name, width, height, psnr_c, ssim_c, psnr_e=None, ssim_e=None):
    """One report row; the enhanced columns appear when enhanced curves are given."""
    row = {"split": split, "sequence": name, "size": f"{width}x{height}", "frames": len(psnr_c),
           "psnr": psnr_c.mean(), "ssim": ssim_c.mean(),
           "sd": psnr_sd(psnr_c), "pvd": peak_valley_difference(psnr_c)}
    if psnr_e is not None:
        row.update({"psnr_enh": psnr_e.mean(), "ssim_enh": ssim_e.mean(),
                    "delta_psnr": psnr_e.mean() - psnr_c.mean(),
                    "delta_ssim_x100": 100 * (ssim_e.mean() - ssim_c.mean()),
                    "sd_enh": psnr_sd(psnr_e), "pvd_enh": peak_valley_difference(psnr_e)})
    return row
