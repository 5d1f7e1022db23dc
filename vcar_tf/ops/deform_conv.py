"""Modulated deformable convolution (DCNv2), stride 1, 'same' padding: the portable composite.

Layout (torchvision / ONNX DeformConv, as STDF and RFDA use it):
- x: (B, H, W, C_in);
- offset: (B, H, W, 2·D·k²): for deformable group d and tap (i, j), channel d·2k² + 2(i·k + j)
  is dy and the next one dx;
- mask: (B, H, W, D·k²) in [0, 1], channel d·k² + i·k + j;
- kernel: (k, k, C_in / groups, C_out), as keras.layers.Conv2D with `groups`.

Tap (i, j) of output pixel (h, w) samples input position (h − p + i + dy, w − p + j + dx),
p = (k − 1) / 2, bilinearly; each of the four corners contributes only when it lies inside the
image (zero outside), so a sample counts exactly when −1 < y < H and −1 < x < W.

Only stock TF ops (gather, floor, matmul): differentiable everywhere, and exportable to
SavedModel, TFLite and ONNX.
"""

import os

import tensorflow as tf

from vcar_tf.errors import VcarError
from vcar_tf.ops.deform_conv_op import load_deform_conv
from vcar_tf.ops.trace_mode import TraceMode

IMPLS = ("auto", "fused", "composite")
SAMPLING_SCOPE = "deform_sampling"  # the composite's sampling positions (export/tflite.py keeps them float)


def deform_impl():
    """The implementation VCAR_DEFORM_IMPL asks for: fused, composite or auto (the default)."""
    impl = os.environ.get("VCAR_DEFORM_IMPL", "auto").strip().lower() or "auto"
    if impl not in IMPLS:
        raise VcarError(f"VCAR_DEFORM_IMPL={impl!r}; use one of {', '.join(IMPLS)}")
    return impl


def check_shapes(x, offset, mask, kernel_size, deformable_groups):
    """Raise VcarError naming the expected shape when offset and mask (or, mask None, the head) do not fit x."""
    taps = kernel_size * kernel_size
    pairs = ((("offset", offset, 2 * deformable_groups * taps), ("mask", mask, deformable_groups * taps))
             if mask is not None else (("head", offset, 3 * deformable_groups * taps),))
    for name, t, channels in pairs:
        if t.shape.rank != 4 or (t.shape[-1] is not None and t.shape[-1] != channels):
            raise VcarError(f"deform conv {name} must be (B, H, W, {channels}) for kernel {kernel_size} and "
                            f"{deformable_groups} deformable groups; got {tuple(t.shape)}")
        for axis in (1, 2):
            if None not in (t.shape[axis], x.shape[axis]) and t.shape[axis] != x.shape[axis]:
                raise VcarError(f"deform conv {name} must have the input's H and W {tuple(x.shape[1:3])}; "
                                f"got {tuple(t.shape)}")


def deform_conv2d_composite(x, offset, mask, kernel, bias=None, deformable_groups=1, groups=1):
    """DCNv2 forward as stock TF ops; see the module docstring for the layout. 16-bit inputs are
    computed in float32 and the result cast back, as the fused op does: bf16 holds whole numbers
    exactly only to 256, so its sampling positions would lose the offsets' fractions from x = 128 on."""
    if x.dtype in (tf.bfloat16, tf.float16):
        f32 = [None if t is None else tf.cast(t, tf.float32) for t in (x, offset, mask, kernel, bias)]
        return tf.cast(deform_conv2d_composite(*f32, deformable_groups=deformable_groups, groups=groups), x.dtype)
    k = kernel.shape[0]
    taps = k * k
    dg = deformable_groups
    b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    c_in = x.shape[-1]
    cg = c_in // dg
    pad = (k - 1) // 2
    hw = h * w

    with tf.name_scope(SAMPLING_SCOPE):  # absolute positions: int8 would round them to W/255 pixels
        # sampling positions (B, H, W, D, k², 2)
        # dy and dx as (B, H, W, D, k²), sliced on a 5-D view: TFLite's StridedSlice takes at most 5-D
        off = tf.reshape(offset, tf.stack([b, h, w, dg * taps, 2]))
        off_y, off_x = (tf.reshape(off[..., i], tf.stack([b, h, w, dg, taps])) for i in (0, 1))
        ti, tj = tf.meshgrid(tf.range(k), tf.range(k), indexing="ij")
        tap_y = tf.cast(tf.reshape(ti, [-1]) - pad, x.dtype)
        tap_x = tf.cast(tf.reshape(tj, [-1]) - pad, x.dtype)
        gy = tf.reshape(tf.cast(tf.range(h), x.dtype), [1, -1, 1, 1, 1])
        gx = tf.reshape(tf.cast(tf.range(w), x.dtype), [1, 1, -1, 1, 1])
        py = gy + tf.reshape(tap_y, [1, 1, 1, 1, taps]) + off_y
        px = gx + tf.reshape(tap_x, [1, 1, 1, 1, taps]) + off_x
        y0 = tf.floor(py)
        x0 = tf.floor(px)
        ly, lx = py - y0, px - x0
        y0 = tf.cast(y0, tf.int32)
        x0 = tf.cast(x0, tf.int32)

    # (B, D, H·W, C_in/D): gather rows of each deformable group's channels
    source = tf.transpose(tf.reshape(x, tf.stack([b, hw, dg, cg])), [0, 2, 1, 3])
    sampled = 0.0
    for dy, dx, weight in ((0, 0, (1 - ly) * (1 - lx)), (0, 1, (1 - ly) * lx),
                           (1, 0, ly * (1 - lx)), (1, 1, ly * lx)):
        yc, xc = y0 + dy, x0 + dx
        inside = (yc >= 0) & (yc < h) & (xc >= 0) & (xc < w)
        index = tf.where(inside, yc * w + xc, 0)  # (B, H, W, D, k²)
        index = tf.reshape(tf.transpose(index, [0, 3, 1, 2, 4]), tf.stack([b, dg, hw * taps]))
        values = tf.gather(source, index, batch_dims=2)  # (B, D, H·W·k², C_in/D)
        weight = tf.where(inside, weight, 0.0)
        weight = tf.reshape(tf.transpose(weight, [0, 3, 1, 2, 4]), tf.stack([b, dg, hw * taps, 1]))
        sampled += values * weight
    m = tf.reshape(tf.transpose(tf.reshape(mask, tf.stack([b, h, w, dg, taps])), [0, 3, 1, 2, 4]),
                   tf.stack([b, dg, hw * taps, 1]))
    sampled *= m
    # columns (B·H·W, k², C_in) in the kernel's (tap, channel) order
    cols = tf.reshape(sampled, tf.stack([b, dg, hw, taps, cg]))
    cols = tf.transpose(cols, [0, 2, 3, 1, 4])
    c_out = kernel.shape[-1]
    if groups == 1:
        out = tf.matmul(tf.reshape(cols, tf.stack([b * hw, taps * c_in])), tf.reshape(kernel, [taps * c_in, c_out]))
    else:
        cols = tf.reshape(cols, tf.stack([b * hw, taps, groups, c_in // groups]))
        wk = tf.reshape(kernel, [taps, c_in // groups, groups, c_out // groups])
        out = tf.einsum("pkgc,kcgo->pgo", cols, wk)
    out = tf.reshape(out, tf.stack([b, h, w, c_out]))
    if bias is not None:
        out = out + bias
    return out


_FORCED_IMPL = TraceMode()  # set by composite_only / fused_only


def composite_only():
    """Inside this context every DeformConv2D traces the composite (exports: stock ops only)."""
    return _FORCED_IMPL.forced("composite")


def fused_only():
    """Inside this context every DeformConv2D traces the fused op (VcarError if it cannot build):
    the ONNX export that maps it onto ONNX's DeformConv."""
    return _FORCED_IMPL.forced("fused")


def selected_impl():
    """'fused' or 'composite' for the next trace, following VCAR_DEFORM_IMPL and what builds."""
    impl = _FORCED_IMPL.current or deform_impl()
    if impl == "composite":
        return "composite"
    if impl == "fused":
        load_deform_conv(required=True)
        return "fused"
    return "fused" if load_deform_conv(required=False) is not None else "composite"


def _fused_call(op, x, offset_and_mask, kernel, bias, deformable_groups, groups):
    if bias is None:
        bias = tf.zeros([kernel.shape[-1]], tf.float32)
    # the fused op computes in float32; its CPU kernel also takes and returns bfloat16 itself (the same
    # values as Cast ops around it, without their passes over memory), its CUDA one float32 only
    io_dtype = tf.bfloat16 if x.dtype == tf.bfloat16 and not tf.config.list_logical_devices("GPU") else tf.float32
    data = [tf.cast(t, io_dtype) for t in (x, *offset_and_mask)]
    weights = [tf.cast(t, tf.float32) for t in (kernel, bias)]
    return tf.cast(op(*data, *weights, deformable_groups=deformable_groups, groups=groups), x.dtype)


def deform_conv2d(x, offset, mask, kernel, bias=None, deformable_groups=1, groups=1):
    """DCNv2 through the fused op or the composite (VCAR_DEFORM_IMPL=fused|composite|auto)."""
    if selected_impl() == "composite":
        return deform_conv2d_composite(x, offset, mask, kernel, bias, deformable_groups, groups)
    lib = load_deform_conv(required=True)
    return _fused_call(lib.vcar_deform_conv2d, x, (offset, mask), kernel, bias, deformable_groups, groups)


def split_head(head, kernel_size, deformable_groups):
    """The offset/mask conv's output (B, H, W, 3·D·k²) -> offsets (its first 2·D·k² channels) and masks
    (the sigmoid of the rest)."""
    offsets, logits = tf.split(head, [2 * deformable_groups * kernel_size ** 2, -1], axis=-1)
    return offsets, tf.sigmoid(logits)


def deform_conv2d_head(x, head, kernel, bias=None, deformable_groups=1, groups=1):
    """deform_conv2d on the offset/mask conv's output whole (split_head's layout). The fused CPU op takes
    it as it is (no split, sigmoid or their gradients' ops) unless an export forces an implementation
    or a GPU is visible; otherwise split_head, then deform_conv2d."""
    if (_FORCED_IMPL.current is None and selected_impl() == "fused"
            and not tf.config.list_logical_devices("GPU")):
        lib = load_deform_conv(required=True)
        return _fused_call(lib.vcar_deform_conv2d_head, x, (head,), kernel, bias, deformable_groups, groups)
    return deform_conv2d(x, *split_head(head, kernel.shape[0], deformable_groups), kernel, bias, deformable_groups,
                         groups)
