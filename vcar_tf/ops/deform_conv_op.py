"""Loading of the fused deformable-conv op (CPU, and CUDA where TF and a toolkit allow) and its gradient.

The library is built by vcar_tf.ops.build on first use; a failed build is one warning and None for
`auto` callers (vcar_tf.ops.deform_conv then traces the composite).
"""

import os
import warnings

from vcar_tf.errors import VcarError, first_line
from vcar_tf.ops import build

_LOADED = {}

CPU_SOURCES = ("deform_conv_op.cc",)
CUDA_SOURCES = ("deform_conv_gpu_op.cc", "deform_conv_gpu.cu.cc")


def deform_conv_sources(*names):
    return [os.path.join(build.source_dir(), "deform_conv", n) for n in names]


def build_deform_conv_cuda(toolkit):
    """The deform-conv library with its CUDA kernels (CPU kernels included)."""
    return build.build_library("deform_conv_cuda", deform_conv_sources(*CPU_SOURCES, *CUDA_SOURCES), cuda=toolkit)


def _deform_conv_path():
    """With a CUDA-enabled TF and a toolkit of TF's CUDA major version, the library with the CUDA
    kernels; otherwise, or if that build fails, one warning and the CPU-only library."""
    import tensorflow as tf

    if tf.test.is_built_with_cuda():
        tf_cuda = str(tf.sysconfig.get_build_info().get("cuda_version", ""))
        major = int(tf_cuda.split(".")[0]) if tf_cuda[:1].isdigit() else None
        toolkit = build.CudaToolkit.find(major)
        if toolkit is None:
            seen = ", ".join(f"{t.home} ({'.'.join(map(str, t.version or ('?',)))})" for t in build.CudaToolkit.all_found())
            warnings.warn(f"CUDA deformable conv not built: no CUDA {major or ''} toolkit for this TF (CUDA "
                          f"{tf_cuda or '?'}; found: {seen or 'none'}); set VCAR_CUDA_HOME to a CUDA {major or ''} "
                          "toolkit. The fused op runs on the CPU only",
                          RuntimeWarning, stacklevel=4)
        else:
            try:
                return build_deform_conv_cuda(toolkit)
            except VcarError as e:
                warnings.warn(f"CUDA deformable conv not built ({e}); the fused op runs on the CPU only",
                              RuntimeWarning, stacklevel=4)
    return build.build_library("deform_conv", deform_conv_sources(*CPU_SOURCES))


def load_deform_conv_emulation():
    """Test-only: the CUDA kernels compiled by g++ as loops on the CPU, as the ops
    VcarDeformConv2DEmulated(Grad), with tiny tiles and slices so small inputs cross several."""
    import tensorflow as tf

    flags = ["-DVCAR_GPU_EMULATION", "-DVCAR_GPU_COLUMN_FLOATS=2048", "-DVCAR_GPU_SLICE=16"]
    return tf.load_op_library(build.build_library("deform_conv_emulated", deform_conv_sources(*CUDA_SOURCES), flags))


def load_deform_conv(required):
    """The loaded deform-conv library (with its gradient registered), or None when it cannot be
    built and not required (one warning per process)."""
    if "deform_conv" in _LOADED:
        lib, error = _LOADED["deform_conv"]
        if lib is None and required:
            raise VcarError(f"VCAR_DEFORM_IMPL=fused but the fused op is unavailable: {error}")
        return lib
    import tensorflow as tf

    try:
        lib = tf.load_op_library(_deform_conv_path())
        _register_gradient(lib)
        _LOADED["deform_conv"] = (lib, None)
    except (VcarError, tf.errors.OpError) as e:
        _LOADED["deform_conv"] = (None, first_line(e))
        if required:
            raise VcarError(f"VCAR_DEFORM_IMPL=fused but the fused op is unavailable: {e}") from None
        warnings.warn(f"fused deformable conv unavailable ({first_line(e)}); using the composite",
                      RuntimeWarning, stacklevel=3)
        return None
    return lib


def _register_gradient(lib):
    import tensorflow as tf

    @tf.RegisterGradient("VcarDeformConv2D")
    def _grad(op, grad):
        return lib.vcar_deform_conv2d_grad(*op.inputs[:4], grad, deformable_groups=op.get_attr("deformable_groups"),
                                           groups=op.get_attr("groups"))

    @tf.RegisterGradient("VcarDeformConv2DHead")
    def _head_grad(op, grad):
        return lib.vcar_deform_conv2d_head_grad(*op.inputs[:3], grad,
                                                deformable_groups=op.get_attr("deformable_groups"),
                                                groups=op.get_attr("groups"))
