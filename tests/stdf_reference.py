"""An independent NumPy reference of the STDF-PyTorch release network, written from its published
description (PyTorch semantics: Conv2d with padding 1 on every side, ConvTranspose2d(4, 2, 1),
torchvision's modulated deformable conv), computed on (C, H, W) arrays straight from the release's
state_dict keys. Test-only; it shares no code with vcar_tf."""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def relu(x):
    return np.maximum(x, 0.0)


def conv2d(x, weight, bias, stride=1, pad=1):
    """PyTorch Conv2d: x (C, H, W), weight (O, C, kH, kW)."""
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    kh, kw = weight.shape[2:]
    windows = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("chwij,ocij->ohw", windows, weight, optimize=True) + bias[:, None, None]


def conv_transpose2d(x, weight, bias, stride=2, pad=1):
    """PyTorch ConvTranspose2d: x (C, H, W), weight (C, O, kH, kW); every input pixel scatters
    its kernel at stride `stride`, then `pad` is cut from every side."""
    c, h, w = x.shape
    kh, kw = weight.shape[2:]
    full = np.zeros((weight.shape[1], (h - 1) * stride + kh, (w - 1) * stride + kw))
    for i in range(kh):
        for j in range(kw):
            full[:, i:i + (h - 1) * stride + 1:stride, j:j + (w - 1) * stride + 1:stride] += np.einsum(
                "chw,co->ohw", x, weight[:, :, i, j])
    return full[:, pad:full.shape[1] - pad, pad:full.shape[2] - pad] + bias[:, None, None]


def bilinear_zero_outside(plane, py, px):
    """torchvision's sampling: 0 unless -1 < y < H and -1 < x < W; corners outside add nothing."""
    h, w = plane.shape
    y0, x0 = np.floor(py).astype(int), np.floor(px).astype(int)
    out = np.zeros(py.shape)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            weight = (1 - np.abs(py - yy)) * (1 - np.abs(px - xx))
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            out += np.where(inside, weight * plane[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], 0.0)
    valid = (py > -1) & (py < h) & (px > -1) & (px < w)
    return np.where(valid, out, 0.0)


def modulated_deform_conv3x3(x, offset, mask, weight, bias, groups):
    """DCNv2, kernel 3, stride 1, padding 1: offset channel g·18 + 2k is dy, +1 dx; mask g·9 + k."""
    c, h, w = x.shape
    per_group = c // groups
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    columns = np.zeros((c, 9, h, w))
    for ch in range(c):
        g = ch // per_group
        for k in range(9):
            i, j = divmod(k, 3)
            py = ys - 1 + i + offset[g * 18 + 2 * k]
            px = xs - 1 + j + offset[g * 18 + 2 * k + 1]
            columns[ch, k] = bilinear_zero_outside(x[ch], py, px) * mask[g * 9 + k]
    return np.einsum("ckhw,ock->ohw", columns, weight.reshape(weight.shape[0], c, 9)) + bias[:, None, None]


def stdf_reference(state, frames):
    """The release network on frames (T, H, W) in [0, 1], H and W multiples of 8; -> (H, W)."""
    p = lambda name: (state[f"{name}.weight"].astype(np.float64), state[f"{name}.bias"].astype(np.float64))  # noqa: E731
    t = frames.shape[0]
    x = frames.astype(np.float64)
    nb = 1 + len({k.split(".")[1] for k in state if k.startswith("ffnet.dn_conv")})
    skips = [relu(conv2d(x, *p("ffnet.in_conv.0")))]
    for i in range(1, nb):
        y = relu(conv2d(skips[-1], *p(f"ffnet.dn_conv{i}.0"), stride=2))
        skips.append(relu(conv2d(y, *p(f"ffnet.dn_conv{i}.2"))))
    y = relu(conv2d(skips[-1], *p("ffnet.tr_conv.0"), stride=2))
    y = relu(conv2d(y, *p("ffnet.tr_conv.2")))
    y = relu(conv_transpose2d(y, *p("ffnet.tr_conv.4")))
    for i in range(nb - 1, 0, -1):
        y = relu(conv2d(np.concatenate([y, skips[i]]), *p(f"ffnet.up_conv{i}.0")))
        y = relu(conv_transpose2d(y, *p(f"ffnet.up_conv{i}.2")))
    off_msk = conv2d(relu(conv2d(y, *p("ffnet.out_conv.0"))), *p("ffnet.offset_mask"))
    offset, mask = off_msk[:t * 18], 1.0 / (1.0 + np.exp(-off_msk[t * 18:]))
    y = relu(modulated_deform_conv3x3(x, offset, mask, *p("ffnet.deform_conv"), groups=t))
    y = relu(conv2d(y, *p("qenet.in_conv.0")))
    hidden = sorted({int(k.split(".")[2]) for k in state if k.startswith("qenet.hid_conv.")})
    for i in hidden:
        y = relu(conv2d(y, *p(f"qenet.hid_conv.{i}")))
    return x[t // 2] + conv2d(y, *p("qenet.out_conv"))[0]
