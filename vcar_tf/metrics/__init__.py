"""Quality metrics on Y exactly as the field computes them."""

from vcar_tf.metrics.fluctuation import peak_valley_difference, psnr_sd
from vcar_tf.metrics.psnr import psnr_y, to_unit
from vcar_tf.metrics.ssim import ssim

__all__ = ["peak_valley_difference", "psnr_sd", "psnr_y", "ssim", "to_unit"]
