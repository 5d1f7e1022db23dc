"""DeformConv2D: the Keras layer over vcar_tf.ops.deform_conv (modulated deformable conv, DCNv2)."""

import keras

from vcar_tf.errors import VcarError
from vcar_tf.ops.deform_conv import check_shapes, deform_conv2d


@keras.saving.register_keras_serializable(package="vcar_tf")
class DeformConv2D(keras.layers.Layer):
    """Modulated deformable 3x3 (or k x k) conv, stride 1, 'same' padding.

    Called on [x (B, H, W, C), offset (B, H, W, 2·D·k²), mask (B, H, W, D·k²) in [0, 1]];
    layout in vcar_tf/ops/deform_conv.py. The kernel is (k, k, C / groups, filters)."""

    def __init__(self, filters, kernel_size=3, groups=1, deformable_groups=1, use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.groups = int(groups)
        self.deformable_groups = int(deformable_groups)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if self.kernel_size % 2 == 0:
            raise VcarError(f"DeformConv2D kernel_size must be odd ('same' padding); got {kernel_size}")

    def build(self, input_shape):
        channels = input_shape[0][-1]
        for what, n in (("groups", self.groups), ("deformable_groups", self.deformable_groups)):
            if channels % n:
                raise VcarError(f"DeformConv2D: {channels} input channels are not divisible by {what}={n}")
        if self.filters % self.groups:
            raise VcarError(f"DeformConv2D: filters={self.filters} is not divisible by groups={self.groups}")
        k = self.kernel_size
        self.kernel = self.add_weight(name="kernel", shape=(k, k, channels // self.groups, self.filters),
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None

    def call(self, inputs):
        x, offset, mask = inputs
        check_shapes(x, offset, mask, self.kernel_size, self.deformable_groups)
        return deform_conv2d(x, offset, mask, self.kernel, self.bias, self.deformable_groups, self.groups)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "groups": self.groups, "deformable_groups": self.deformable_groups, "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}
