"""AR-CNN (Dong et al., 2015): 9x9 (64) -> 7x7 (32) -> 1x1 (16) -> 5x5 (1), single frame (R=0).

Residual form, as every model here: the output is the compressed frame plus the predicted
residual. 106,561 parameters.
"""

import keras

from vcar_tf.models.layers import SelectFrame, frames_input, residual_head, residual_output
from vcar_tf.models.registry import register


@register("arcnn", radius=0, description="AR-CNN single-frame baseline")
def build_arcnn(kernels=(9, 7, 1, 5), channels=(64, 32, 16, 1)):
    frames = frames_input(0)
    x = SelectFrame(0, name="frame")(frames)
    for i, (k, c) in enumerate(zip(kernels[:-1], channels[:-1])):
        x = keras.layers.Conv2D(c, k, padding="same", activation="relu", kernel_initializer="he_normal",
                                name=f"conv{i + 1}")(x)
    x = residual_head(channels[-1], kernels[-1], name=f"conv{len(kernels)}")(x)
    return residual_output(frames, 0, x, "arcnn")
