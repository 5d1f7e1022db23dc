import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import break_op_source, fused_op_or_skip
from vcar_tf.errors import VcarError
from vcar_tf.ops.deform_conv import check_shapes, deform_conv2d_composite


def bilinear_reference(img, y, x):
    """Independent loop form of DCNv2 sampling: 0 unless -1 < y < H and -1 < x < W; corners
    outside the image contribute nothing."""
    h, w = img.shape[:2]
    if not (-1 < y < h and -1 < x < w):
        return np.zeros(img.shape[2:])
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    out = np.zeros(img.shape[2:])
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[yy, xx]
    return out


def deform_conv_reference(x, offset, mask, kernel, bias, dg, groups):
    b, h, w, c_in = x.shape
    k, c_out = kernel.shape[0], kernel.shape[-1]
    pad, cg, ci_g, co_g = (k - 1) // 2, c_in // dg, c_in // groups, c_out // groups
    out = np.zeros((b, h, w, c_out))
    for n in range(b):
        for oy in range(h):
            for ox in range(w):
                cols = np.zeros((k, k, c_in))
                for d in range(dg):
                    for i in range(k):
                        for j in range(k):
                            t = i * k + j
                            dy, dx = offset[n, oy, ox, d * 2 * k * k + 2 * t: d * 2 * k * k + 2 * t + 2]
                            v = bilinear_reference(x[n, :, :, d * cg:(d + 1) * cg], oy - pad + i + dy, ox - pad + j + dx)
                            cols[i, j, d * cg:(d + 1) * cg] = v * mask[n, oy, ox, d * k * k + t]
                for g in range(groups):
                    out[n, oy, ox, g * co_g:(g + 1) * co_g] = np.einsum(
                        "ijc,ijco->o", cols[:, :, g * ci_g:(g + 1) * ci_g], kernel[:, :, :, g * co_g:(g + 1) * co_g])
    return out + bias


def random_case(seed, b=2, h=5, w=7, c_in=4, c_out=6, k=3, dg=2, groups=1, spread=2.5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b, h, w, c_in))
    offset = rng.uniform(-spread, spread, size=(b, h, w, 2 * dg * k * k))
    mask = rng.uniform(0, 1, size=(b, h, w, dg * k * k))
    kernel = rng.normal(size=(k, k, c_in // groups, c_out))
    bias = rng.normal(size=(c_out,))
    return x, offset, mask, kernel, bias


@pytest.mark.parametrize("seed,kw", [
    (0, {}), (1, {"k": 1, "dg": 4}), (2, {"groups": 2, "dg": 1}), (3, {"h": 1, "w": 3, "dg": 4, "c_in": 4}),
    (4, {"spread": 9.0}),  # most samples leave the image
])
def test_composite_matches_numpy_reference(seed, kw):
    dg, groups = kw.get("dg", 2), kw.get("groups", 1)
    x, offset, mask, kernel, bias = random_case(seed, **kw)
    want = deform_conv_reference(x, offset, mask, kernel, bias, dg, groups)
    got = deform_conv2d_composite(*(tf.constant(a, tf.float64) for a in (x, offset, mask, kernel, bias)),
                                  deformable_groups=dg, groups=groups)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-10)


def test_partial_corners_and_exact_edges():
    """A sample at y = -0.5 takes half of row 0; at y = -1 or y = H it takes nothing."""
    x = np.arange(1, 13, dtype=np.float64).reshape(1, 3, 4, 1)
    kernel = np.ones((1, 1, 1, 1))
    mask = np.ones((1, 3, 4, 1))
    for dy, expect_row0 in ((-0.5, 0.5 * x[0, 0, :, 0]), (-1.0, np.zeros(4)), (-1.0 + 1e-9, 1e-9 * x[0, 0, :, 0])):
        offset = np.zeros((1, 3, 4, 2))
        offset[..., 0] = dy
        got = deform_conv2d_composite(tf.constant(x), tf.constant(offset), tf.constant(mask), tf.constant(kernel))
        np.testing.assert_allclose(got.numpy()[0, 0, :, 0], expect_row0, atol=1e-12)
    offset = np.zeros((1, 3, 4, 2))
    offset[..., 0] = 3.0  # y = 3 + row: row 0 lands on y = H exactly
    got = deform_conv2d_composite(tf.constant(x), tf.constant(offset), tf.constant(mask), tf.constant(kernel))
    assert np.all(got.numpy() == 0)


def test_composite_gradients_match_finite_differences():
    x, offset, mask, kernel, bias = random_case(7, b=1, h=4, w=5, c_in=2, c_out=3, dg=2, spread=1.7)
    args = [tf.constant(a, tf.float64) for a in (x, offset, mask, kernel, bias)]

    def f(*a):
        return deform_conv2d_composite(*a, deformable_groups=2)

    theoretical, numerical = tf.test.compute_gradient(f, args, delta=1e-6)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, atol=1e-5)


def test_bad_offset_and_mask_shapes_name_the_expected_shape():
    x = tf.zeros((1, 8, 8, 7))
    with pytest.raises(VcarError, match=r"offset must be \(B, H, W, 126\)"):
        check_shapes(x, tf.zeros((1, 8, 8, 18)), tf.zeros((1, 8, 8, 63)), 3, 7)
    with pytest.raises(VcarError, match=r"mask must be \(B, H, W, 63\)"):
        check_shapes(x, tf.zeros((1, 8, 8, 126)), tf.zeros((1, 8, 8, 9)), 3, 7)
    with pytest.raises(VcarError, match="H and W"):
        check_shapes(x, tf.zeros((1, 4, 8, 126)), tf.zeros((1, 8, 8, 63)), 3, 7)


# --- the fused C++ op against the composite ---------------------------------------------------

FUSED_CASES = [
    (0, dict(b=2, h=5, w=7, c_in=4, c_out=6, k=3, dg=2, groups=1)),
    (1, dict(b=1, h=9, w=8, c_in=8, c_out=4, k=3, dg=4, groups=2)),
    (2, dict(b=2, h=6, w=5, c_in=3, c_out=5, k=1, dg=3, groups=1)),
    (3, dict(b=1, h=23, w=19, c_in=7, c_out=64, k=3, dg=7, groups=1, spread=6.0)),  # many samples leave
    (4, dict(b=1, h=40, w=33, c_in=14, c_out=8, k=5, dg=7, groups=2)),  # several tiles
    (5, dict(b=1, h=7, w=9, c_in=4, c_out=6, k=3, dg=4, groups=2)),  # one channel per deformable group, 2 groups
    (6, dict(b=1, h=200, w=400, c_in=7, c_out=8, k=3, dg=7, groups=1)),  # scratch over 2 MiB: huge-page mappings
    (7, dict(b=2, h=6, w=9, c_in=64, c_out=8, k=3, dg=64, groups=1)),  # 576 (group, tap) lanes (RFDA's DSTA: 144)
    (8, dict(b=1, h=7, w=6, c_in=128, c_out=4, k=1, dg=128, groups=1)),  # RFDA's alignment: 128 lanes
    # 1x1, one channel per group (the pointwise path): a block of 16 lanes and one of 4, most samples
    # outside, tiles across images, the input gradient summed over threads
    (9, dict(b=2, h=19, w=23, c_in=20, c_out=8, k=1, dg=20, groups=1, spread=6.0)),
]


def assert_matches_composite(forward_op, grad_op, seed, shape, ran_on=None):
    """forward_op / grad_op (the fused op's signature) = the composite to 1e-5, forward and every
    gradient; with ran_on (e.g. "GPU"), also that both ops ran on that kind of device."""
    x, offset, mask, kernel, bias = (tf.constant(a, tf.float32) for a in random_case(seed, **shape))
    dg, groups = shape["dg"], shape["groups"]
    fused = forward_op(x, offset, mask, kernel, bias, deformable_groups=dg, groups=groups)
    assert ran_on is None or ran_on in fused.device, fused.device
    composite = deform_conv2d_composite(x, offset, mask, kernel, bias, dg, groups)
    scale = max(1.0, float(tf.reduce_max(tf.abs(composite))))
    assert float(tf.reduce_max(tf.abs(fused - composite))) <= 1e-5 * scale
    upstream = tf.constant(np.random.default_rng(seed + 100).normal(size=fused.shape), tf.float32)
    grads_fused = grad_op(x, offset, mask, kernel, upstream, deformable_groups=dg, groups=groups)
    assert ran_on is None or ran_on in grads_fused[0].device, grads_fused[0].device
    with tf.GradientTape() as tape:
        tape.watch([x, offset, mask, kernel, bias])
        y = deform_conv2d_composite(x, offset, mask, kernel, bias, dg, groups)
    grads_composite = tape.gradient(y, [x, offset, mask, kernel, bias], output_gradients=upstream)
    for name, a, b in zip(("input", "offset", "mask", "weight", "bias"), grads_fused, grads_composite):
        scale = max(1.0, float(tf.reduce_max(tf.abs(b))))
        assert float(tf.reduce_max(tf.abs(a - b))) <= 1e-5 * scale, name


def test_gpu_benchmark_c_api_matches_the_emulated_op(tmp_path):
    """benchmarks/bench_deform_gpu.py's C entry points (deform_kernels_c_api.cc), built as the CPU
    emulation, give what the emulated TF op gives, forward and backward, and name bad sizes: the
    harness that checks the CUDA kernels on a GPU machine without TensorFlow."""
    import ctypes

    from vcar_tf.ops import deform_conv_op

    fused_op_or_skip()  # a compiler is there
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import bench_deform_gpu

    kernels = bench_deform_gpu.Kernels(bench_deform_gpu.build(str(tmp_path), None, True, None))
    shape = dict(b=1, h=9, w=8, c_in=8, c_out=4, k=3, dg=4, groups=2)
    x, offset, mask, kernel, bias = (np.ascontiguousarray(a, np.float32) for a in random_case(1, **shape))
    grad = np.random.default_rng(2).normal(size=(1, 9, 8, 4)).astype(np.float32)
    out = kernels.forward(x, offset, mask, kernel, bias, 4, 2)
    grads = kernels.backward(x, offset, mask, kernel, grad, 4, 2)
    emulated = deform_conv_op.load_deform_conv_emulation()
    attrs = dict(deformable_groups=4, groups=2)
    expected = [emulated.vcar_deform_conv2d_emulated(x, offset, mask, kernel, bias, **attrs),
                *emulated.vcar_deform_conv2d_emulated_grad(x, offset, mask, kernel, grad, **attrs)]
    for name, a, b in zip(("output", "dx", "doffset", "dmask", "dkernel", "dbias"), [out, *grads], expected):
        np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-5 * max(1.0, float(np.abs(b).max())), err_msg=name)
    sizes = kernels.sizes(x, kernel, 4, 2)
    sizes[4] = 2  # an even kernel
    assert kernels.lib.vcar_scratch_floats(sizes, (ctypes.c_int64 * 2)()) == b"kernel must be k x k with odd k"


BAD_SIZES = [  # (x channels, k, kernel input channels, O, deformable groups, offset channels), the message
    ((7, 2, 7, 8, 7, 56), "odd k"),
    ((7, 9, 7, 8, 7, 1134), "above 7 is not supported"),
    ((7, 3, 7, 8, 2, 36), "divisible by deformable_groups"),
    ((8, 3, 4, 8, 2, 36), "kernel input channels"),
    ((7, 3, 7, 8, 7, 125), "offset must have"),
]


@pytest.mark.parametrize("sizes,message", BAD_SIZES)
def test_fused_and_emulated_ops_refuse_bad_sizes(sizes, message):
    """The shape checks the CPU op and the CUDA kernels share (geometry.h, op_common.h)."""
    from vcar_tf.ops import deform_conv_op

    c, k, kernel_c, o, dg, offset_c = sizes
    x = tf.zeros((1, 5, 6, c))
    offset, mask = tf.zeros((1, 5, 6, offset_c)), tf.zeros((1, 5, 6, dg * k * k))
    kernel, bias = tf.zeros((k, k, kernel_c, o)), tf.zeros((o,))
    emulated = deform_conv_op.load_deform_conv_emulation()
    for op in (fused_op_or_skip().vcar_deform_conv2d, emulated.vcar_deform_conv2d_emulated):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            op(x, offset, mask, kernel, bias, deformable_groups=dg)


@pytest.mark.parametrize("seed,shape", FUSED_CASES)
def test_fused_matches_composite_forward_and_every_gradient(seed, shape):
    lib = fused_op_or_skip()
    assert_matches_composite(lib.vcar_deform_conv2d, lib.vcar_deform_conv2d_grad, seed, shape)


@pytest.mark.parametrize("seed,shape", FUSED_CASES)
def test_cuda_kernels_emulated_on_the_cpu_match_composite(seed, shape):
    """The CUDA kernels' bodies (deform_conv_gpu.cu.cc) compiled by g++ as loops, with tiles of a
    few pixels and kernel-gradient slices of 16 so that every case crosses several of each."""
    from vcar_tf.ops import deform_conv_op

    fused_op_or_skip()  # a compiler is there
    lib = deform_conv_op.load_deform_conv_emulation()
    assert_matches_composite(lib.vcar_deform_conv2d_emulated, lib.vcar_deform_conv2d_emulated_grad, seed, shape)


def test_cuda_library_builds_with_nvcc_and_loads():
    """Where a CUDA toolkit is installed: nvcc compiles the kernels, g++ the GPU op with TF's GPU
    headers (through the include overlay), and TF loads the library (in a fresh process: it
    registers the same ops as the CPU-only library). The kernels themselves run only on a GPU."""
    from vcar_tf.ops import build

    fused_op_or_skip()
    if build.CudaToolkit.find() is None:
        pytest.skip("no CUDA toolkit (nvcc) on this machine")
    code = ("import tensorflow as tf; from vcar_tf.ops import build, deform_conv_op; "
            "lib = tf.load_op_library(deform_conv_op.build_deform_conv_cuda(build.CudaToolkit.find())); "
            "print('ops', hasattr(lib, 'vcar_deform_conv2d'), hasattr(lib, 'vcar_deform_conv2d_grad'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "ops True True" in r.stdout, r.stderr[-2000:]


@pytest.mark.skipif(not tf.config.list_physical_devices("GPU"), reason="no GPU visible to TF")
@pytest.mark.parametrize("seed,shape", FUSED_CASES)
def test_cuda_kernels_on_the_gpu_match_composite(seed, shape):
    from vcar_tf.ops import build

    assert build.CudaToolkit.find() is not None, "a GPU but no CUDA toolkit: set VCAR_CUDA_HOME"
    lib = fused_op_or_skip()
    with tf.device("/GPU:0"):
        assert_matches_composite(lib.vcar_deform_conv2d, lib.vcar_deform_conv2d_grad, seed, shape, ran_on="GPU")


def test_fused_portable_build_without_avx512_matches_too(tmp_path):
    """The kernel has an AVX-512 path (taken on this machine when it has AVX-512) and a plain C++
    one; build the latter in a fresh process and run the same comparisons (the head ops' too)."""
    fused_op_or_skip()
    env = dict(os.environ, VCAR_OPS_PORTABLE="1", VCAR_TF_CACHE=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                        "-k", "fused_matches_composite or head_op"], env=env, capture_output=True, text=True)
    passed = f"{len(FUSED_CASES) + 2 * len(HEAD_CASES) + 2} passed"  # and the two single head tests
    assert r.returncode == 0 and passed in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    built = os.listdir(os.path.join(tmp_path, "ops"))
    assert any(name.endswith(".so") for name in built), built


def test_impl_selection_and_gradient_through_the_layer(monkeypatch):
    fused_op_or_skip()
    from vcar_tf.models.blocks import DeformConv2D
    from vcar_tf.ops.deform_conv import composite_only, selected_impl

    x, offset, mask, _, _ = (tf.constant(a, tf.float32) for a in random_case(5, dg=2))
    layer = DeformConv2D(6, 3, deformable_groups=2)
    layer.build([x.shape, offset.shape, mask.shape])
    results = {}
    for impl in ("fused", "composite"):
        monkeypatch.setenv("VCAR_DEFORM_IMPL", impl)
        assert selected_impl() == impl
        with tf.GradientTape() as tape:
            tape.watch(offset)
            y = layer([x, offset, mask])
            loss = tf.reduce_sum(y * y)
        results[impl] = (y, tape.gradient(loss, [offset] + layer.trainable_variables))
        with composite_only():
            assert selected_impl() == "composite"
    np.testing.assert_allclose(results["fused"][0], results["composite"][0], atol=1e-5)
    for a, b in zip(results["fused"][1], results["composite"][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    monkeypatch.setenv("VCAR_DEFORM_IMPL", "cuda")
    with pytest.raises(VcarError, match="VCAR_DEFORM_IMPL='cuda'; use one of auto, fused, composite"):
        selected_impl()


def test_bfloat16_inputs_run_the_fused_op_in_float32_and_return_bfloat16(monkeypatch):
    """Under mixed_bfloat16 the fused op runs on the bf16 inputs (on the CPU it takes them itself, no
    Cast ops around it), in float32, with the gradient flowing back to the bf16 tensors."""
    fused_op_or_skip()
    from vcar_tf.ops.deform_conv import deform_conv2d

    monkeypatch.setenv("VCAR_DEFORM_IMPL", "fused")
    x, offset, mask, kernel, bias = (tf.cast(tf.constant(a, tf.float32), tf.bfloat16) for a in random_case(3, dg=2))
    graph = tf.function(lambda *a: deform_conv2d(*a, 2)).get_concrete_function(x, offset, mask, kernel, bias).graph
    (op,) = [op for op in graph.get_operations() if op.type == "VcarDeformConv2D"]
    assert op.get_attr("T") == tf.bfloat16 and all(t.op.type != "Cast" for t in op.inputs[:3])
    with tf.GradientTape() as tape:
        tape.watch(offset)
        y = deform_conv2d(x, offset, mask, kernel, bias, 2)
        total = tf.reduce_sum(tf.cast(y, tf.float32))
    grad = tape.gradient(total, offset)
    assert y.dtype == tf.bfloat16 and grad.dtype == tf.bfloat16
    f32 = [tf.cast(t, tf.float32) for t in (x, offset, mask, kernel, bias)]
    expected = deform_conv2d_composite(*f32, 2)
    np.testing.assert_allclose(tf.cast(y, tf.float32), tf.cast(tf.cast(expected, tf.bfloat16), tf.float32),
                               rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("seed,shape", FUSED_CASES[:6])
def test_bfloat16_in_and_out_of_the_cpu_kernel_equal_casts_around_its_float32_form(seed, shape):
    """T=bfloat16: the output and the input, offset and mask gradients are bit for bit the float32
    op's on the widened inputs, rounded to bf16 as tf.cast rounds; the weight gradients are equal."""
    lib = fused_op_or_skip()
    x, offset, mask, kernel, bias = (tf.constant(a, tf.float32) for a in random_case(seed, **shape))
    x, offset, mask = (tf.cast(t, tf.bfloat16) for t in (x, offset, mask))
    attrs = dict(deformable_groups=shape["dg"], groups=shape["groups"])
    f32 = [tf.cast(t, tf.float32) for t in (x, offset, mask)]
    got = lib.vcar_deform_conv2d(x, offset, mask, kernel, bias, **attrs)
    expected = tf.cast(lib.vcar_deform_conv2d(*f32, kernel, bias, **attrs), tf.bfloat16)
    assert got.dtype == tf.bfloat16
    np.testing.assert_array_equal(tf.bitcast(got, tf.uint16), tf.bitcast(expected, tf.uint16))
    upstream = tf.cast(tf.constant(np.random.default_rng(seed + 100).normal(size=got.shape), tf.float32), tf.bfloat16)
    grads = lib.vcar_deform_conv2d_grad(x, offset, mask, kernel, upstream, **attrs)
    grads_f32 = lib.vcar_deform_conv2d_grad(*f32, kernel, tf.cast(upstream, tf.float32), **attrs)
    for name, a, b in zip(("input", "offset", "mask", "weight", "bias"), grads, grads_f32):
        assert a.dtype == (tf.bfloat16 if name in ("input", "offset", "mask") else tf.float32), name
        bits = tf.uint16 if a.dtype == tf.bfloat16 else tf.uint32
        np.testing.assert_array_equal(tf.bitcast(a, bits), tf.bitcast(tf.cast(b, a.dtype), bits), err_msg=name)


HEAD_CASES = [
    (0, dict(b=3, h=9, w=11, c_in=6, c_out=5, k=3, dg=6, groups=1)),  # one channel per deformable group
    (1, dict(b=2, h=17, w=16, c_in=16, c_out=8, k=1, dg=16, groups=1)),  # RF's 1x1 form; tiles across images
    (2, dict(b=1, h=7, w=5, c_in=4, c_out=6, k=3, dg=2, groups=2)),  # two channels per deformable group
]


def head_case(seed, shape, dtype):
    """x, the head (offsets, then the logits of random_case's masks), kernel, bias and an output gradient."""
    x, offset, mask, kernel, bias = random_case(seed, **shape)
    head = np.concatenate([offset, np.log(mask / (1 - mask))], axis=-1)
    upstream = np.random.default_rng(seed + 100).normal(size=(*x.shape[:3], shape["c_out"]))
    return (*(tf.constant(a, dtype) for a in (x, head)), *(tf.constant(a, tf.float32) for a in (kernel, bias)),
            tf.constant(upstream, dtype))


def head_op_and_gradients(lib, x, head, kernel, bias, upstream, attrs):
    y = lib.vcar_deform_conv2d_head(x, head, kernel, bias, **attrs)
    return [y, *lib.vcar_deform_conv2d_head_grad(x, head, kernel, upstream, **attrs)]


@pytest.mark.parametrize("seed,shape", HEAD_CASES)
def test_head_op_equals_split_and_sigmoid_around_the_op(seed, shape):
    """The head ops take the offset/mask conv's output whole (offsets, then mask logits): the output and
    every gradient equal splitting it, tf.sigmoid on the logits and the two-input op."""
    lib = fused_op_or_skip()
    from vcar_tf.ops.deform_conv import split_head

    x, head, kernel, bias, upstream = head_case(seed, shape, tf.float32)
    attrs = dict(deformable_groups=shape["dg"], groups=shape["groups"])
    got = head_op_and_gradients(lib, x, head, kernel, bias, upstream, attrs)
    with tf.GradientTape() as tape:
        tape.watch([x, head, kernel, bias])
        y = lib.vcar_deform_conv2d(x, *split_head(head, shape["k"], shape["dg"]), kernel, bias, **attrs)
    want = [y, *tape.gradient(y, [x, head, kernel, bias], output_gradients=upstream)]
    for name, a, b in zip(("y", "input", "head", "weight", "bias"), got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max(), err_msg=name)


def test_head_op_takes_the_same_sigmoid_wherever_a_pixel_lies_in_its_tile():
    """A 1x1 conv of ones on an image of ones with zero offsets returns the masks, sigmoid(logits), and
    its logits' gradient sigmoid' (no sums to reorder): bit for bit the same for an image alone and
    inside a batch whose tiles of 256 pixels straddle images (Eigen's own loops would take a scalar
    sigmoid at unaligned ends and change the last bit, which deformable sampling's kinks amplified to
    0.6% in a weight gradient of RFDA)."""
    lib = fused_op_or_skip()
    logits = np.random.default_rng(0).normal(scale=4.0, size=(3, 23, 17, 1))
    x, head = tf.ones([3, 23, 17, 1]), tf.constant(np.concatenate([np.zeros((3, 23, 17, 2)), logits], -1), tf.float32)
    kernel, bias, upstream = tf.ones([1, 1, 1, 1]), tf.zeros([1]), tf.ones([3, 23, 17, 1])
    batch = head_op_and_gradients(lib, x, head, kernel, bias, upstream, {})
    np.testing.assert_allclose(batch[0], tf.sigmoid(head[..., 2:]), rtol=1e-6)
    for i in range(3):
        alone = head_op_and_gradients(lib, x[i:i + 1], head[i:i + 1], kernel, bias, upstream[i:i + 1], {})
        np.testing.assert_array_equal(alone[0], batch[0][i:i + 1])
        np.testing.assert_array_equal(alone[2], batch[2][i:i + 1])


@pytest.mark.parametrize("seed,shape", [FUSED_CASES[3], FUSED_CASES[9]])
def test_gradients_are_the_same_on_every_call(seed, shape):
    """Threads sum their own gradients in a fixed order: repeated calls agree bit for bit (the bias
    gradient's last bits changed from call to call with Eigen's colwise sum; 64 outputs showed it)."""
    lib = fused_op_or_skip()
    x, offset, mask, kernel, _ = (tf.constant(a, tf.float32) for a in random_case(seed, **{**shape, "c_out": 64}))
    x, offset, mask = (tf.tile(t, [4, 2, 2, 1]) for t in (x, offset, mask))  # many tiles for both threads
    upstream = tf.constant(np.random.default_rng(seed).normal(size=(*x.shape[:3], 64)), tf.float32)
    attrs = dict(deformable_groups=shape["dg"], groups=shape["groups"])
    first = lib.vcar_deform_conv2d_grad(x, offset, mask, kernel, upstream, **attrs)
    for _ in range(4):
        for name, a, b in zip(("input", "offset", "mask", "weight", "bias"), first,
                              lib.vcar_deform_conv2d_grad(x, offset, mask, kernel, upstream, **attrs)):
            np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("seed,shape", HEAD_CASES)
def test_bfloat16_head_op_equals_casts_around_its_float32_form(seed, shape):
    lib = fused_op_or_skip()
    attrs = dict(deformable_groups=shape["dg"], groups=shape["groups"])
    x, head, kernel, bias, upstream = head_case(seed, shape, tf.bfloat16)
    got = head_op_and_gradients(lib, x, head, kernel, bias, upstream, attrs)
    f32 = head_op_and_gradients(lib, *(tf.cast(t, tf.float32) for t in (x, head)), kernel, bias,
                                tf.cast(upstream, tf.float32), attrs)
    for name, a, b in zip(("y", "input", "head", "weight", "bias"), got, f32):
        assert a.dtype == (tf.bfloat16 if name in ("y", "input", "head") else tf.float32), name
        bits = tf.uint16 if a.dtype == tf.bfloat16 else tf.uint32
        np.testing.assert_array_equal(tf.bitcast(a, bits), tf.bitcast(tf.cast(b, a.dtype), bits), err_msg=name)


def test_the_layer_on_a_head_takes_the_head_op_except_in_exports(monkeypatch):
    """DeformConv2D([x, head]) equals DeformConv2D([x, offset, mask]) on the split head; exports trace
    the split: stock ops under composite_only, the two-input op (ONNX's DeformConv) under fused_only."""
    fused_op_or_skip()
    from vcar_tf.models.blocks import DeformConv2D
    from vcar_tf.ops.deform_conv import composite_only, fused_only, split_head

    monkeypatch.setenv("VCAR_DEFORM_IMPL", "auto")
    x, head, _, _, _ = head_case(0, HEAD_CASES[0][1], tf.float32)
    layer = DeformConv2D(5, 3, deformable_groups=6)
    want = layer([x, *split_head(head, 3, 6)])
    with pytest.raises(VcarError, match=r"head must be \(B, H, W, 162\)"):
        layer([x, head[..., 1:]])
    for context, expected in ((contextlib.nullcontext, {"VcarDeformConv2DHead"}), (composite_only, set()),
                              (fused_only, {"VcarDeformConv2D"})):
        with context():
            graph = tf.function(lambda x, head: layer([x, head])).get_concrete_function(x, head).graph
            np.testing.assert_allclose(layer([x, head]), want, rtol=1e-5, atol=1e-5)
        assert {op.type for op in graph.get_operations() if op.type.startswith("Vcar")} == expected, context


def test_bfloat16_outputs_round_ties_to_even_and_keep_infinities_and_nan():
    """The CPU kernel narrows its float results to bf16 itself, 16 at a time where it can: with x = 0
    every output is the float32 bias, so each of these values goes through that rounding, at pixels
    in whole vectors and in the tail, and must come out as tf.cast rounds it (NaN as a NaN). Ties
    round to even, the largest floats round up to infinity. (No denormals: TF's threads flush them
    to zero before any rounding.)"""
    lib = fused_op_or_skip()
    bits = np.array([0x3F808000, 0x3F818000, 0x3F80C000, 0x3F807FFF, 0xBF808000, 0x7F7FFFFF, 0x7F7F8000,
                     0x7F800000, 0xFF800000, 0x0080C000, 0x80818000, 0x7FC00000, 0xFFC00000, 0x7F800001,
                     0x00000000, 0xC0008000, 0x3EAAAAAB, 0x4B7F8000, 0xC2F6E979, 0x3F7FFFFF], np.uint32)
    bias = tf.constant(bits.view(np.float32))
    b, h, w, o = 1, 3, 7, bias.shape[0]  # 21 pixels: one vector of 16 outputs, then the rest
    x = tf.zeros([b, h, w, 1], tf.bfloat16)
    y = lib.vcar_deform_conv2d(x, tf.zeros([b, h, w, 2], tf.bfloat16), tf.ones([b, h, w, 1], tf.bfloat16),
                               tf.ones([1, 1, 1, o]), bias)
    got = tf.bitcast(y, tf.uint16).numpy().reshape(-1, o)
    expected = tf.bitcast(tf.cast(tf.broadcast_to(bias, [b * h * w, o]), tf.bfloat16), tf.uint16).numpy()
    nan = np.isnan(bits.view(np.float32))
    np.testing.assert_array_equal(got[:, ~nan], expected[:, ~nan])
    assert np.isnan(tf.cast(y, tf.float32).numpy()[..., nan]).all()


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_16_bit_inputs_sample_the_composite_at_float32_positions(dtype):
    """Wide frames under mixed precision: columns from 128 on (bf16) keep their half-pixel offsets,
    and the last column is not pushed out of the image. Every output is 0.5 of an alternating 0/1 row."""
    w = 300
    x = tf.cast(tf.constant(np.tile([0.0, 1.0], w // 2).reshape(1, 1, w, 1)), dtype)
    offset = tf.cast(tf.constant(np.tile([0.0, 0.5], w).reshape(1, 1, w, 2)), dtype)
    mask = tf.ones([1, 1, w, 1], dtype)
    kernel = tf.ones([1, 1, 1, 1], dtype)
    got = deform_conv2d_composite(x, offset, mask, kernel)
    assert got.dtype == dtype
    # x + 0.5 takes half of each neighbour; at x = 299.5 half of the last column, the other corner outside
    np.testing.assert_array_equal(tf.cast(got, tf.float32).numpy()[0, 0, :, 0], np.full(w, 0.5))


def test_failed_build_warns_once_and_falls_back(monkeypatch, tmp_path):
    from vcar_tf.ops import deform_conv_op
    from vcar_tf.ops.deform_conv import selected_impl

    break_op_source(monkeypatch, tmp_path, "deform_conv/deform_conv_op.cc")
    monkeypatch.setattr(deform_conv_op, "_LOADED", {})
    monkeypatch.setenv("VCAR_DEFORM_IMPL", "auto")
    with pytest.warns(RuntimeWarning, match="fused deformable conv unavailable .*building deform_conv failed"):
        assert selected_impl() == "composite"
    assert selected_impl() == "composite"  # no second build, no second warning
    monkeypatch.setenv("VCAR_DEFORM_IMPL", "fused")
    with pytest.raises(VcarError, match="VCAR_DEFORM_IMPL=fused but the fused op is unavailable"):
        selected_impl()


def test_cuda_tf_without_a_toolkit_of_its_cuda_version_warns_and_uses_the_cpu_kernel(monkeypatch):
    from vcar_tf.ops import deform_conv_op

    fused_op_or_skip()
    monkeypatch.delenv("VCAR_CUDA_HOME", raising=False)
    monkeypatch.setattr(tf.test, "is_built_with_cuda", lambda: True)
    monkeypatch.setattr(tf.sysconfig, "get_build_info", lambda: {"cuda_version": "99.1"})
    with pytest.warns(RuntimeWarning, match="no CUDA 99 toolkit for this TF .*set VCAR_CUDA_HOME"):
        path = deform_conv_op._deform_conv_path()
    assert os.path.basename(path).startswith("deform_conv-"), path


def test_a_build_error_without_a_message_still_warns_and_falls_back(monkeypatch):
    from vcar_tf.ops import deform_conv_op
    from vcar_tf.ops.deform_conv import selected_impl

    def fail():
        raise VcarError("")

    monkeypatch.setattr(deform_conv_op, "_deform_conv_path", fail)
    monkeypatch.setattr(deform_conv_op, "_LOADED", {})
    monkeypatch.setenv("VCAR_DEFORM_IMPL", "auto")
    with pytest.warns(RuntimeWarning, match=r"fused deformable conv unavailable \(VcarError\)"):
        assert selected_impl() == "composite"
