"""First-use build of the C++ custom ops in custom_ops/, cached per TF version, source and CPU.

The library is compiled with g++ against the installed TensorFlow's headers
(tf.sysconfig flags) into $VCAR_TF_CACHE/ops (default ~/.cache/vcar_tf/ops), written to a temp
file and renamed, under a file lock so that parallel processes build it once. If the build
fails, `auto` callers get one warning and the composite.
"""

import fcntl
import hashlib
import os
import platform
import subprocess
import sys
import warnings

from vcar_tf.errors import VcarError

_LOADED = {}
# Tried in order. TF's bundled Eigen does not compile with AVX512-FP16 under g++ 12 (Sapphire
# Rapids and newer), hence the first set; the portable ones are for compilers without that flag.
ARCH_FLAGS = (["-march=native", "-mno-avx512fp16"], ["-march=native"], ["-mavx2", "-mfma"], [])


def portable_flags():
    """VCAR_OPS_PORTABLE=1 builds without AVX-512, so the kernels' plain C++ paths (what a CPU
    without AVX-512 runs) can be tested on any machine."""
    return ["-mno-avx512f"] if os.environ.get("VCAR_OPS_PORTABLE") == "1" else []


def source_dir():
    """custom_ops/ of a source checkout, or its installed copy vcar_tf/_custom_ops."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for candidate in (os.path.join(here, "_custom_ops"), os.path.join(os.path.dirname(here), "custom_ops")):
        if os.path.isdir(os.path.join(candidate, "deform_conv")):
            return candidate
    raise VcarError("custom_ops sources not found (reinstall vcar_tf)")


def cache_dir():
    base = os.environ.get("VCAR_TF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vcar_tf")
    return os.path.join(base, "ops")


def _cpu_id():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), platform.processor())
    except OSError:
        return platform.processor()


def build_library(name, sources):
    """Compile sources into a cached shared library; returns its path (builds at most once)."""
    import tensorflow as tf

    digest = hashlib.sha256()
    for path in sources:
        with open(path, "rb") as f:
            digest.update(f.read())
    digest.update(tf.__version__.encode())
    digest.update(_cpu_id().encode())
    digest.update(" ".join(portable_flags()).encode())
    out_dir = cache_dir()
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, f"{name}-tf{tf.__version__}-{digest.hexdigest()[:12]}.so")
    if os.path.exists(target):
        return target
    with open(target + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(target):
            return target
        tmp = f"{target}.tmp{os.getpid()}"
        print(f"building the fused {name} op for TF {tf.__version__} (once; cached in {out_dir})", file=sys.stderr)
        first_error = None
        for arch in ARCH_FLAGS:
            cmd = ["g++", "-std=c++17", "-shared", "-fPIC", "-O3", *arch, *portable_flags(), "-w", *sources, "-o", tmp,
                   *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True)
            except OSError as e:
                raise VcarError(f"cannot run g++ to build {name}: {e}") from None
            if r.returncode == 0:
                break
            errors = [line for line in r.stderr.splitlines() if "error" in line]
            first_error = first_error or (errors or r.stderr.splitlines() or ["?"])[0]
        else:
            raise VcarError(f"building {name} failed: {first_error}")
        os.replace(tmp, target)
    return target


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
        folder = os.path.join(source_dir(), "deform_conv")
        path = build_library("deform_conv", [os.path.join(folder, "deform_conv_op.cc")])
        lib = tf.load_op_library(path)
        _register_gradient(lib)
        _LOADED["deform_conv"] = (lib, None)
    except (VcarError, tf.errors.OpError) as e:
        _LOADED["deform_conv"] = (None, str(e).splitlines()[0])
        if required:
            raise VcarError(f"VCAR_DEFORM_IMPL=fused but the fused op is unavailable: {e}") from None
        warnings.warn(f"fused deformable conv unavailable ({str(e).splitlines()[0]}); using the composite",
                      RuntimeWarning, stacklevel=3)
        return None
    return lib


def _register_gradient(lib):
    import tensorflow as tf

    @tf.RegisterGradient("VcarDeformConv2D")
    def _grad(op, grad):
        return lib.vcar_deform_conv2d_grad(*op.inputs[:4], grad, deformable_groups=op.get_attr("deformable_groups"),
                                           groups=op.get_attr("groups"))
