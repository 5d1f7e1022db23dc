"""The fused deformable conv's CUDA kernels on a GPU without TensorFlow: forward and every gradient
against torchvision's deform_conv2d, then the speed of both.

    python benchmarks/bench_deform_gpu.py [--repeats 20] [--arch sm_90] [--out benchmarks/results/deform-gpu.md]
    python benchmarks/bench_deform_gpu.py --emulate   # the same kernel bodies, as loops on the CPU (g++)
    python benchmarks/bench_deform_gpu.py --parity_only --small   # e.g. under compute-sanitizer
    python benchmarks/bench_deform_gpu.py --baseline_source OLD/deform_conv_gpu.cu.cc --profile

Needs torch, torchvision and, on a GPU, nvcc; not TensorFlow. The kernels that the fused op
launches sit behind plain-pointer launchers (custom_ops/deform_conv/deform_conv_gpu.h);
benchmarks/deform_kernels_c_api.cc gives them C entry points, called here through ctypes on torch's
tensors (NHWC, as the op sees them). Two builds: the kernels' own tile sizes, and tiny tiles and
slices (as the TF tests' emulation) so that the small cases cross several. Every case must match
torchvision within --tolerance (max |difference| / max |torchvision|, the output and each of the
five gradients) before anything is timed; the run stops with exit 1 otherwise. Timing: CUDA
events around each call, after 3 warm-up calls, min / median / max of --repeats calls, float32
(torch's TF32 off, its default for matmuls), the STDF fusion layer at 416x240 and 832x480, batch 1.
--baseline_source checks and times another version of the kernels' source beside this tree's (with
this tree's header), in the same process; --profile adds each kernel's GPU time at 832x480.
"""

import ctypes
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import arg_parser, publish  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.join(os.path.dirname(HERE), "custom_ops", "deform_conv")
TINY_TILES = ["-DVCAR_GPU_COLUMN_FLOATS=2048", "-DVCAR_GPU_SLICE=16"]

# name, (b, h, w, c, k, o, deformable groups, groups): the models' layers, and one of every option
SMALL_CASES = (
    ("STDF fusion 7->64, 3x3, 7 dg", (1, 23, 37, 7, 3, 64, 7, 1)),
    ("RFDA DSTA attention 16->16, 3x3, 16 dg", (2, 13, 11, 16, 3, 16, 16, 1)),
    ("64->64, 3x3, 64 dg (576 lanes)", (1, 17, 29, 64, 3, 64, 64, 1)),
    ("RFDA alignment 128->64, 1x1, 128 dg", (1, 21, 19, 128, 1, 64, 128, 1)),
    ("5x5, batch 2, 2 dg, 4 groups", (2, 19, 29, 8, 5, 12, 2, 4)),
)
TIMED_SIZES = ((416, 240), (832, 480))  # width, height of the STDF fusion layer


def stdf_fusion(width, height):
    return 1, height, width, 7, 3, 64, 7, 1


def cuda_compiler():
    from vcar_tf.ops.build import CudaToolkit

    toolkit = CudaToolkit.find()
    if toolkit is None:
        sys.exit("error: no CUDA toolkit found (nvcc on PATH, /usr/local/cuda or $VCAR_CUDA_HOME)")
    return toolkit.nvcc


def build(out_dir, nvcc, tiny, arch, source=None):
    """The kernels and their C entry points as one shared library in out_dir, built by nvcc, or by
    g++ as the CPU emulation where nvcc is None; its path."""
    emulate = nvcc is None
    name = f"deform_kernels{'_emulated' if emulate else ''}{'_tiny' if tiny else ''}{'_other' if source else ''}.so"
    lib = os.path.join(out_dir, name)
    sources = [source or os.path.join(KERNELS, "deform_conv_gpu.cu.cc"), os.path.join(HERE, "deform_kernels_c_api.cc")]
    flags = ["-std=c++17", "-O3", f"-I{KERNELS}", *(TINY_TILES if tiny else [])]
    if emulate:
        cmd = [["g++", *flags, "-shared", "-fPIC", "-DVCAR_GPU_EMULATION", *sources, "-o", lib]]
    else:
        common = [nvcc, *flags, "-Xcompiler", "-fPIC", *([f"-arch={arch}"] if arch else [])]
        cmd = [[*common, "--expt-relaxed-constexpr", "-c", "-x", "cu", sources[0], "-o", lib + ".o"],
               [*common, "-shared", sources[1], lib + ".o", "-o", lib]]
    for step in cmd:
        r = subprocess.run(step, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"error: building {name} failed:\n{r.stderr}")
    return lib


def new_array(like, shape):
    """An uninitialised float32 array of `shape` of like's kind: a torch tensor on like's device, or NumPy."""
    import numpy as np

    return like.new_empty(shape) if hasattr(like, "new_empty") else np.empty(shape, np.float32)


def address(a):
    """The data pointer of a contiguous torch tensor or NumPy array."""
    return ctypes.c_void_p(a.data_ptr() if hasattr(a, "data_ptr") else a.ctypes.data)


class Kernels:
    """The library's forward and backward on contiguous float32 torch tensors (CPU or CUDA, as built)
    or NumPy arrays: NHWC x, offset, mask; HWIO kernel."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        for fn in (self.lib.vcar_scratch_floats, self.lib.vcar_forward, self.lib.vcar_backward):
            fn.restype = ctypes.c_char_p

    @staticmethod
    def _call(fn, *args):
        error = fn(*args)
        if error:
            raise RuntimeError(error.decode())

    @staticmethod
    def sizes(x, kernel, dg, groups):
        b, h, w, c = x.shape
        return (ctypes.c_int64 * 8)(b, h, w, c, kernel.shape[0], kernel.shape[3], dg, groups)

    def scratch(self, sizes, like):
        """The im2col and partial-sum scratch arrays of the call of these sizes."""
        floats = (ctypes.c_int64 * 2)()
        self._call(self.lib.vcar_scratch_floats, sizes, floats)
        return [new_array(like, (max(n, 1),)) for n in floats]

    @staticmethod
    def _stream(x):
        if not getattr(x, "is_cuda", False):
            return ctypes.c_void_p(None)
        import torch

        return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

    def forward(self, x, offset, mask, kernel, bias, dg, groups, scratch=None):
        sizes = self.sizes(x, kernel, dg, groups)
        cols, _ = scratch or self.scratch(sizes, x)
        out = new_array(x, (*x.shape[:3], kernel.shape[3]))
        self._call(self.lib.vcar_forward, sizes, *map(address, (x, offset, mask, kernel, bias, out, cols)),
                   self._stream(x))
        return out

    def backward(self, x, offset, mask, kernel, grad, dg, groups, scratch=None):
        sizes = self.sizes(x, kernel, dg, groups)
        cols, partial = scratch or self.scratch(sizes, x)
        grads = [new_array(x, tuple(t.shape)) for t in (x, offset, mask, kernel)] + [new_array(x, (kernel.shape[3],))]
        self._call(self.lib.vcar_backward, sizes, *map(address, (x, offset, mask, kernel, grad, *grads, cols, partial)),
                   self._stream(x))
        return grads


def random_inputs(torch, case, device, seed=0):
    """x, offset (normal, sd 2 pixels: many samples fall off the image), mask in [0, 1), kernel,
    bias and an output gradient, NHWC / HWIO float32."""
    b, h, w, c, k, o, dg, groups = case
    g = torch.Generator().manual_seed(seed)
    shapes = ((b, h, w, c), (b, h, w, 2 * dg * k * k), (b, h, w, dg * k * k), (k, k, c // groups, o), (o,),
              (b, h, w, o))
    x, offset, mask, kernel, bias, grad = (torch.randn(s, generator=g) for s in shapes)
    return [t.contiguous().to(device) for t in (x, 2 * offset, torch.rand(mask.shape, generator=g),
                                                0.1 * kernel, bias, grad)]


def torchvision_args(torch, x, offset, mask, kernel, bias, grad):
    """torchvision's own layouts of the inputs (NCHW; OIHW kernel), as leaves that need a
    gradient, and of the output gradient."""
    nchw = lambda t: t.permute(0, 3, 1, 2).contiguous()  # noqa: E731
    leaves = [nchw(x), nchw(offset), nchw(mask), kernel.permute(3, 2, 0, 1).contiguous(), bias.clone()]
    return [t.requires_grad_() for t in leaves], nchw(grad)


def torchvision_run(torch, args, grad=None):
    """deform_conv2d's output or, given the output gradient, the gradients of args."""
    from torchvision.ops import deform_conv2d

    x, offset, mask, kernel, bias = args
    with torch.set_grad_enabled(grad is not None):
        out = deform_conv2d(x, offset, kernel, bias, padding=(kernel.shape[-1] - 1) // 2, mask=mask)
    return out if grad is None else torch.autograd.grad(out, args, grad)


def relative_error(ours, reference):
    return float((ours - reference).abs().max() / reference.abs().max().clamp_min(1e-30))


def parity(torch, kernels, case, device):
    """Max relative error of the output and of dx, doffset, dmask, dkernel, dbias."""
    x, offset, mask, kernel, bias, grad = random_inputs(torch, case, device)
    dg, groups = case[6], case[7]
    ours = [kernels.forward(x, offset, mask, kernel, bias, dg, groups),
            *kernels.backward(x, offset, mask, kernel, grad, dg, groups)]
    args, grad_nchw = torchvision_args(torch, x, offset, mask, kernel, bias, grad)
    nhwc = lambda t: t.permute(0, 2, 3, 1)  # noqa: E731
    dx, doffset, dmask, dkernel, dbias = torchvision_run(torch, args, grad_nchw)
    reference = [nhwc(torchvision_run(torch, args)), nhwc(dx), nhwc(doffset), nhwc(dmask),
                 dkernel.permute(2, 3, 1, 0), dbias]
    return [relative_error(a, b) for a, b in zip(ours, reference)]


def event_times(torch, fn, repeats):
    """Milliseconds of each of `repeats` calls of fn, by CUDA events, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def timings(torch, builds, case, repeats):
    """{(implementation, pass): [ms, ...]} for each build of the kernels and for torchvision."""
    x, offset, mask, kernel, bias, grad = random_inputs(torch, case, "cuda")
    dg, groups = case[6], case[7]
    args, grad_nchw = torchvision_args(torch, x, offset, mask, kernel, bias, grad)
    runs = {"torchvision": (lambda: torchvision_run(torch, args), lambda: torchvision_run(torch, args, grad_nchw))}
    for name, kernels in builds.items():
        scratch = kernels.scratch(kernels.sizes(x, kernel, dg, groups), x)

        def forward(kernels=kernels, scratch=scratch):
            return kernels.forward(x, offset, mask, kernel, bias, dg, groups, scratch)

        def forward_backward(kernels=kernels, scratch=scratch, forward=forward):
            forward()
            return kernels.backward(x, offset, mask, kernel, grad, dg, groups, scratch)

        runs[name] = (forward, forward_backward)
    return {(name, pass_): event_times(torch, fn, repeats) for name, fns in runs.items()
            for pass_, fn in zip(("forward", "forward+backward"), fns)}, runs


def kernel_profile(torch, run, calls=3):
    """[(microseconds per call, kernel name)] of run()'s GPU kernels, by torch.profiler, longest first."""
    from torch.profiler import ProfilerActivity, profile

    run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            run()
        torch.cuda.synchronize()
    rows = []
    for item in prof.key_averages():
        us = getattr(item, "self_device_time_total", None) or getattr(item, "self_cuda_time_total", 0)
        if us > 0:
            name = item.key.replace("(anonymous namespace)::", "").replace("vcar::gpu::", "").split("(")[0]
            rows.append((us / calls, name.replace("|", "/")[:70]))
    return sorted(rows, reverse=True)


def spread(values):
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def gpu_description(torch, nvcc):
    import torchvision

    props = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        driver = "?"
    nvcc = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    return (f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs, "
            f"driver {driver}; nvcc {nvcc[-1] if nvcc else '?'}; torch {torch.__version__}, torchvision "
            f"{torchvision.__version__}")


def main():
    p = arg_parser(__doc__, repeats=20)
    p.add_argument("--emulate", action="store_true", help="g++ loops on the CPU instead of CUDA (parity only)")
    p.add_argument("--arch", default=os.environ.get("VCAR_CUDA_ARCH"), help="nvcc -arch, e.g. sm_90")
    p.add_argument("--parity_only", action="store_true")
    p.add_argument("--small", action="store_true", help="only the small parity cases")
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--baseline_source", help="another deform_conv_gpu.cu.cc to time beside this tree's (and check)")
    p.add_argument("--profile", action="store_true", help="GPU time by kernel (torch.profiler) at the largest size")
    args = p.parse_args()
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = "cpu" if args.emulate else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device visible to torch (use --emulate for the CPU emulation)")
    names = ("output", "dx", "doffset", "dmask", "dkernel", "dbias")
    lines = ["| build | case | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        nvcc = None if args.emulate else cuda_compiler()
        builds = {"tiny tiles": Kernels(build(tmp, nvcc, True, args.arch))}
        if nvcc:
            builds["own tiles"] = Kernels(build(tmp, nvcc, False, args.arch))
        if nvcc and args.baseline_source:
            builds["baseline kernels"] = Kernels(build(tmp, nvcc, False, args.arch, args.baseline_source))
        cases = list(SMALL_CASES)
        if not (args.emulate or args.small):
            cases += [(f"STDF fusion at {w}x{h}", stdf_fusion(w, h)) for w, h in TIMED_SIZES]
        for build_name, kernels in builds.items():
            for name, case in cases:
                if build_name == "tiny tiles" and case[1] * case[2] > 10_000:
                    continue
                errors = parity(torch, kernels, case, device)
                worst = max(worst, *errors)
                lines.append(f"| {build_name} | {name} | " + " | ".join(f"{e:.1e}" for e in errors) + " |")
                print(lines[-1], flush=True)
        on = "the CPU (emulated kernels)" if args.emulate else "the GPU"
        body = [f"Parity with torchvision's deform_conv2d on {on} (max |difference| / max |torchvision|; "
                f"tolerance {args.tolerance:g}):", "", *lines, ""]
        if worst > args.tolerance:
            publish("Deformable conv CUDA kernels: parity FAILED", "\n".join(body), args.out)
            sys.exit(1)
        if not (args.emulate or args.parity_only):
            timed = {"vcar_tf CUDA kernels": builds["own tiles"]}
            if "baseline kernels" in builds:
                timed["baseline kernels"] = builds["baseline kernels"]
            names = [*timed, "torchvision"]
            body += [gpu_description(torch, nvcc), "",
                     (f"Milliseconds per call, min / median / max of {args.repeats} (CUDA events), STDF fusion "
                      "layer 7->64, 3x3, 7 deformable groups, batch 1, float32:"), "",
                     "| size | pass | " + " | ".join(names) + " | torchvision / vcar_tf (medians) |",
                     "|---|---|" + "---|" * (len(names) + 1)]
            for w, h in TIMED_SIZES:
                ms, runs = timings(torch, timed, stdf_fusion(w, h), args.repeats)
                for pass_ in ("forward", "forward+backward"):
                    ratio = statistics.median(ms[("torchvision", pass_)]) / statistics.median(
                        ms[("vcar_tf CUDA kernels", pass_)])
                    body.append(f"| {w}x{h} | {pass_} | " + " | ".join(spread(ms[(n, pass_)]) for n in names)
                                + f" | {ratio:.2f}x |")
                    print(body[-1], flush=True)
            if args.profile:
                body += ["", f"Where the time goes: GPU microseconds per forward+backward at {w}x{h} by kernel "
                         "(torch.profiler, mean of 3 calls):", ""]
                for name in names:
                    body += [f"| {name} | us |", "|---|---|",
                             *(f"| {k} | {us:.0f} |" for us, k in kernel_profile(torch, runs[name][1])), ""]
    where = "emulated on the CPU" if args.emulate else "on a GPU"
    publish(f"Deformable conv CUDA kernels {where} against torchvision", "\n".join(body), args.out)


if __name__ == "__main__":
    main()
