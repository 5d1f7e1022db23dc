"""The compiler driver of the C++/CUDA custom ops in custom_ops/: first-use builds, cached per TF
version, source and CPU (the deformable conv's loading is vcar_tf/ops/deform_conv_op.py).

The library is compiled with g++ against the installed TensorFlow's headers
(tf.sysconfig flags) into $VCAR_TF_CACHE/ops (default ~/.cache/vcar_tf/ops), written to a temp
file and renamed, under a file lock so that parallel processes build it once. If the build
fails, `auto` callers get one warning and the composite.
"""

import fcntl
import functools
import hashlib
import os
import platform
import subprocess
import sys
import warnings

from vcar_tf.errors import VcarError, first_line

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


def _digest(sources, flags):
    """Hash of the sources, every header beside them and in custom_ops/common, the flags, the TF version and the
    CPU."""
    import tensorflow as tf

    digest = hashlib.sha256()
    folders = sorted({os.path.dirname(path) for path in sources} | {os.path.join(source_dir(), "common")})
    headers = sorted(os.path.join(d, f) for d in folders if os.path.isdir(d) for f in os.listdir(d) if f.endswith(".h"))
    for path in [*sources, *headers]:
        with open(path, "rb") as f:
            digest.update(f.read())
    for part in (tf.__version__, _cpu_id(), " ".join(portable_flags()), " ".join(flags)):
        digest.update(part.encode())
    return digest.hexdigest()[:12]


def _run(cmd, what):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise VcarError(f"cannot run {cmd[0]} to build {what}: {e}") from None
    if r.returncode:
        errors = [line for line in r.stderr.splitlines() if "error" in line]
        raise VcarError(f"building {what} failed: {(errors or r.stderr.splitlines() or ['?'])[0]}")


def check_private(path):
    """Refuse to load code from `path` (a file or folder) when someone else could have written it:
    it must belong to this user (or root) and not be writable by group or others."""
    st = os.stat(path)
    if st.st_uid not in (os.getuid(), 0):
        raise VcarError(f"{path} belongs to uid {st.st_uid}, not to this user: not loading a library from it")
    if st.st_mode & 0o022:
        raise VcarError(f"{path} is writable by group or others (mode {st.st_mode & 0o777:o}): "
                        f"not loading a library from it")


_OPTIONAL = {}


def load_optional(name, source, what, fallback, on_load=None):
    """The op library `name` built from `source` (a path under custom_ops/) and loaded, `on_load(lib)` run
    once; or None, with one warning per process ("<what> unavailable (<why>); <fallback>"), where it cannot
    be built or loaded. For libraries whose callers have a stock-op fallback."""
    import tensorflow as tf

    if name not in _OPTIONAL:
        try:
            lib = tf.load_op_library(build_library(name, [os.path.join(source_dir(), source)]))
        except (VcarError, tf.errors.OpError) as e:
            warnings.warn(f"{what} unavailable ({first_line(e)}); {fallback}", RuntimeWarning, stacklevel=3)
            lib = None
        else:
            if on_load is not None:
                on_load(lib)
        _OPTIONAL[name] = lib
    return _OPTIONAL[name]


def build_library(name, sources, flags=(), cuda=None):
    """Compile sources into a cached shared library; returns its path (builds at most once).
    `flags` go to g++; `cuda` (a CudaToolkit) also compiles the sources ending in .cu.cc with
    nvcc and links them (with GOOGLE_CUDA=1 everywhere). A cache that cannot be written or that
    others could have written is a VcarError (callers in `auto` mode warn and use the composite)."""
    out_dir = cache_dir()
    try:
        os.makedirs(out_dir, mode=0o700, exist_ok=True)
        check_private(out_dir)
        target = _build_library(out_dir, name, sources, flags, cuda)
        check_private(target)
    except OSError as e:
        raise VcarError(f"op cache {out_dir} cannot be used: {e.strerror or e}") from None
    return target


def _build_library(out_dir, name, sources, flags, cuda):
    import tensorflow as tf

    flags = list(flags) + (["-DGOOGLE_CUDA=1"] if cuda else [])
    target = os.path.join(out_dir, f"{name}-tf{tf.__version__}-{_digest(sources, flags)}.so")
    if os.path.exists(target):
        return target
    with open(target + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(target):
            return target
        tmp = f"{target}.tmp{os.getpid()}"
        print(f"building the fused {name} op for TF {tf.__version__} (once; cached in {out_dir})", file=sys.stderr)
        host_sources, objects, cuda_flags = list(sources), [], []
        try:
            if cuda:
                host_sources = [path for path in sources if not path.endswith(".cu.cc")]
                for i, path in enumerate(p for p in sources if p.endswith(".cu.cc")):
                    objects.append(f"{tmp}.{i}.o")
                    _run(cuda.compile_command(path, objects[-1]), f"{name} (nvcc)")
                cuda_flags = cuda.host_flags()
            first_error = None
            for arch in ARCH_FLAGS:
                cmd = ["g++", "-std=c++17", "-shared", "-fPIC", "-O3", *arch, *portable_flags(), *flags, *cuda_flags,
                       "-w", *host_sources, *objects, "-o", tmp, *tf.sysconfig.get_compile_flags(),
                       *tf.sysconfig.get_link_flags(), *(cuda.link_flags() if cuda else [])]
                try:
                    _run(cmd, name)
                    break
                except VcarError as e:
                    first_error = first_error or e
            else:
                raise first_error
            os.replace(tmp, target)
        finally:
            for path in objects:
                if os.path.exists(path):
                    os.remove(path)
    return target


class CudaToolkit:
    """nvcc, headers and CUDA runtime of one toolkit: $VCAR_CUDA_HOME, the toolkit of the nvcc on
    PATH, /usr/local/cuda. (PyPI's nvidia-cuda-nvcc-cu12 ships ptxas but no nvcc.)"""

    def __init__(self, home):
        self.home = home
        self.nvcc = os.path.join(home, "bin", "nvcc")
        self.include = os.path.join(home, "include")
        self.lib = next((d for d in (os.path.join(home, "lib64"), os.path.join(home, "lib"))
                         if any(f.startswith("libcudart") for f in (os.listdir(d) if os.path.isdir(d) else []))), None)

    @functools.cached_property
    def version(self):
        """(major, minor) that nvcc reports, or None."""
        import re

        try:
            out = subprocess.run([self.nvcc, "--version"], capture_output=True, text=True).stdout
        except OSError:
            return None
        m = re.search(r"release (\d+)\.(\d+)", out)
        return (int(m.group(1)), int(m.group(2))) if m else None

    @classmethod
    def all_found(cls):
        import shutil

        homes = [os.environ.get("VCAR_CUDA_HOME")]
        nvcc = shutil.which("nvcc")
        homes += [os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None, "/usr/local/cuda"]
        found = [cls(h) for h in dict.fromkeys(filter(None, homes))]
        return [t for t in found if os.path.exists(t.nvcc) and t.lib
                and os.path.exists(os.path.join(t.include, "cuda_runtime.h"))]

    @classmethod
    def find(cls, major=None):
        """$VCAR_CUDA_HOME's toolkit when set (whatever its version), else the first one found of
        that CUDA major version (any when None), or None."""
        found = cls.all_found()
        if os.environ.get("VCAR_CUDA_HOME") and found and found[0].home == os.environ["VCAR_CUDA_HOME"]:
            return found[0]
        return next((t for t in found if major is None or (t.version or (0,))[0] == major), None)

    def compile_command(self, source, obj):
        arch = os.environ.get("VCAR_CUDA_ARCH")  # e.g. sm_90; nvcc's default otherwise (with PTX)
        return [self.nvcc, "-std=c++17", "-c", "-x", "cu", "-O3", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC",
                "-DGOOGLE_CUDA=1", *([f"-arch={arch}"] if arch else []), source, "-o", obj]

    def host_flags(self):
        # TF's GPU headers include CUDA's as third_party/gpus/cuda/include/...: an overlay points there
        overlay = os.path.join(cache_dir(), "cuda-overlay-" + hashlib.sha256(self.home.encode()).hexdigest()[:8])
        link = os.path.join(overlay, "third_party", "gpus", "cuda", "include")
        if not os.path.islink(link):
            os.makedirs(os.path.dirname(link), exist_ok=True)
            tmp = f"{link}.tmp{os.getpid()}"
            os.symlink(self.include, tmp)
            os.replace(tmp, link)
        return [f"-I{overlay}", f"-I{self.include}"]

    def link_flags(self):
        """The static runtime where the toolkit has it, else the shared one (found at run time
        through an rpath)."""
        if os.path.exists(os.path.join(self.lib, "libcudart_static.a")):
            return [f"-L{self.lib}", "-lcudart_static", "-ldl", "-lrt", "-lpthread"]
        shared = sorted(f for f in os.listdir(self.lib) if f.startswith("libcudart.so"))
        return [os.path.join(self.lib, shared[0]), f"-Wl,-rpath,{self.lib}"]
