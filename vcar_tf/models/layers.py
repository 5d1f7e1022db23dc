"""Layers shared by the models; every one serialises through get_config."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vcar_tf")
class SelectFrame(keras.layers.Layer):
    """(B, T, H, W, C) -> (B, H, W, C): frame `index` of the time axis (a gather, export-safe)."""

    def __init__(self, index, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, x):
        return ops.take(x, self.index, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "index": self.index}


def frames_input(radius, name="frames"):
    """The common input: (B, 2R+1, H, W, 1) float32 Y in [0, 1], any H and W."""
    return keras.Input(shape=(2 * radius + 1, None, None, 1), dtype="float32", name=name)


# The residual head and centre + residual compute in float32 under every policy: a bf16 centre frame
# would be rounded to 8 significant bits, up to a grey level in [0.5, 1).
OUTPUT_DTYPE = "float32"


def residual_head(channels=1, kernel=3, name="residual"):
    """The last conv of every model; zero-initialised, so an untrained model is the identity and
    early training only has to learn corrections (no noisy start to unlearn)."""
    return keras.layers.Conv2D(channels, kernel, padding="same", kernel_initializer="zeros", name=name,
                               dtype=OUTPUT_DTYPE)


def residual_output(frames, radius, residual, name):
    """Enhanced centre frame = centre + residual, as a keras.Model."""
    centre = SelectFrame(radius, name="centre", dtype=OUTPUT_DTYPE)(frames)
    enhanced = keras.layers.Add(name="enhanced", dtype=OUTPUT_DTYPE)([centre, residual])
    return keras.Model(frames, enhanced, name=name)
