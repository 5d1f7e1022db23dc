"""DnCNN (Zhang et al., 2017): 17 3x3 conv layers of 64 channels, batch norm on the 15 middle
ones, residual learning; single frame (R=0). 556,097 trainable parameters plus 1,920 batch-norm
moving statistics = 558,017."""

import keras

from vcar_tf.models.layers import SelectFrame, frames_input, residual_head, residual_output
from vcar_tf.models.registry import register


@register("dncnn", radius=0, description="DnCNN single-frame baseline")
def build_dncnn(depth=17, channels=64):
    frames = frames_input(0)
    x = SelectFrame(0, name="frame")(frames)
    x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv1")(x)
    for i in range(2, depth):
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = residual_head(name=f"conv{depth}")(x)
    return residual_output(frames, 0, x, "dncnn")
