"""What every benchmark shares: the machine's description, the argument parser, child processes, timing."""

import argparse
import gc
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time

# Every benchmark imports this module before vcar_tf: the tree it lives in then provides vcar_tf,
# not an installed or editable copy from another checkout (a worktree of an older commit, run for
# a before/after comparison, times that commit's code).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path[:2]:
    sys.path.insert(1, ROOT)


# the CPU features that decide conv speed here: a virtual CPU's model name ("Intel(R) Xeon(R)
# Processor") can hide a host that changes from one session to the next
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_features():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return "CPU features unknown"
    return "features " + (" ".join(f for f in SPEED_FLAGS if f in flags) or "none of " + "/".join(SPEED_FLAGS))


def cpu_times():
    """The system-wide CPU time counters of /proc/stat (user, nice, system, idle, iowait, irq,
    softirq, steal), or None where there is no such file."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return values if len(values) == 8 else None


_TIMES_AT_START = cpu_times()


def stolen_share(start=None, end=None):
    """Share of the machine's CPU time that the hypervisor gave to other guests (steal) between
    two cpu_times() readings (default: this process's start and now); None where unknown."""
    start, end = start or _TIMES_AT_START, end or cpu_times()
    if not start or not end or sum(end) <= sum(start):
        return None
    return (end[7] - start[7]) / (sum(end) - sum(start))


def describe():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cpu = f"{cpu} ({cpu_features()})"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f", {int(f.readline().split()[1]) / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    return f"{cpu}, {cores} cores{mem}, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def revision():
    """'DATE at commit HASH' of this run (with '+ uncommitted code changes' when the package, the
ops or the benchmarks differ from it); $VCAR_COMMIT names the commit instead, for a copy of the
tree whose git history (if any) is not the code's (a GPU machine's copy)."""
    if os.environ.get("VCAR_COMMIT"):
        return f"{time.strftime('%Y-%m-%d')} at commit {os.environ['VCAR_COMMIT']} (given by $VCAR_COMMIT)"
    here = os.path.dirname(os.path.abspath(__file__))
    git = lambda *a: subprocess.run(["git", *a], cwd=here, capture_output=True, text=True).stdout.strip()  # noqa: E731
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    code = [":(top)vcar_tf", ":(top)custom_ops", ":(top)benchmarks/*.py", ":(top)setup.py"]
    dirty = " + uncommitted code changes" if git("status", "--porcelain", "--untracked-files=no", "--", *code) else ""
    return f"{time.strftime('%Y-%m-%d')} at commit {commit}{dirty}"


def publish(title, body, out=None, append=False):
    """Print a benchmark result headed by the machine, the date and commit, and the exact command;
    also write it to `out` (after what `out` holds when `append`)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    stolen = stolen_share()
    stolen = "unknown" if stolen is None else f"{100 * stolen:.0f}%"
    text = (f"# {title}\n\nMachine: {describe()}; 1-minute load average at the end: {load:.1f} "
            f"(above the core count means other jobs shared the CPU); CPU time stolen by the hypervisor "
            f"during the run: {stolen} (/proc/stat steal; above a few % the host was busy with other "
            f"guests)\n\nRun: {revision()}\n\n"
            f"Command: `python {shlex.join(sys.argv)}`\n\n{body}")
    print(text)
    if out:
        from vcar_tf.fileutil import write_text_atomic

        if append and os.path.isfile(out):
            with open(out) as f:
                text = f.read().rstrip("\n") + "\n\n" + text
        write_text_atomic(out, text)
    return text


def run_child(script, *args):
    """Run `script --child ARGS` in a fresh process: its JSON result, or {"failed": reason} when it dies (e.g. out of memory)."""
    out = subprocess.run([sys.executable, script, "--child", *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        lines = [line for line in out.stderr.splitlines() if line.strip() and "cpu_feature_guard" not in line
                 and not line.startswith(("WARNING:", "To enable", "I0000", "W0000"))]
        if out.returncode < 0:  # a signal: the last stderr line is whatever was printed before it
            reason = "killed (out of memory?)" if out.returncode == -9 else f"crashed with signal {-out.returncode}"
        else:
            # the last exception's line, its class without the module path ("tensorflow....ResourceExhaustedError: ...")
            errors = [line.strip().partition(":") for line in lines if "Error" in line.partition(":")[0]]
            errors = [name.split(".")[-1] + colon + rest for name, colon, rest in errors]
            reason = (errors or lines or [f"exit {out.returncode}"])[-1]
        return {"failed": reason.replace("|", "/")[:60]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def rss_mb():
    """Current resident set size of this process, MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def peak_rss_mb():
    """Peak resident set size of this process so far, MB (includes every transient)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_calls(fn, repeats):
    """Seconds of each of `repeats` calls of fn, after one warm-up call (tracing). Python's cyclic
    garbage collector is paused while timing, as timeit does: one full collection of a process
    holding TensorFlow can take longer than the call being timed."""
    fn()
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
        return seconds
    finally:
        if enabled:
            gc.enable()


def finished(outputs):
    """outputs, once TensorFlow's devices are done with them; without copying them to NumPy as
    .numpy() does (a training step never does: 300 MB of gradients for the deformable conv at 832x480)."""
    import tensorflow as tf

    tf.test.experimental.sync_devices()
    return outputs


def timed(fn, repeats):
    """Mean seconds per call of fn (timed_calls)."""
    return sum(timed_calls(fn, repeats)) / repeats


def arg_parser(doc, repeats=3):
    """The common flags: --repeats, --out, and the hidden --child used by run_child."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--out", default=None)
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return p


def run_as_child(args, children):
    """In a `--child KIND ARGS` process, call children[KIND] with the remaining arguments
    (numbers converted to int) and return True; otherwise return False."""
    if not args.child:
        return False
    kind, *rest = args.child
    children[kind](*(int(a) if a.lstrip("-").isdigit() else a for a in rest))
    return True


def traced_op_seconds(run, calls, trace_dir):
    """Call run() `calls` times under TF's profiler, tracing into trace_dir. Returns, per call, the seconds of
    each kernel on TF's compute threads ({'scope/op:Type': s}), the Python-side executes' wall time as the trace
    saw it, and the part of that wall time in which none of those kernels ran (XLA's kernels are not among them)."""
    import glob

    import tensorflow as tf
    try:
        from tsl.profiler.protobuf import xplane_pb2
    except ImportError:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(trace_dir)
    for _ in range(calls):
        run()
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
        space.ParseFromString(f.read())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    names = {k: v.name for k, v in plane.event_metadata.items()}
    ops, executes, kernels = {}, [], []
    for line in plane.lines:
        for event in line.events:
            name = names.get(event.metadata_id, "")
            start = line.timestamp_ns * 1000 + event.offset_ps
            if line.name == "python" and name == "TFE_Py_ExecuteCancelable":
                executes.append((start, start + event.duration_ps))
            if line.name.startswith("tf_Compute") and ":" in name and "::" not in name:
                ops[name] = ops.get(name, 0.0) + event.duration_ps * 1e-12 / calls
                kernels.append((start, start + event.duration_ps))
    wall = sum(end - start for start, end in executes)
    return ops, wall * 1e-12 / calls, (wall - covered_ps(executes, kernels)) * 1e-12 / calls


def covered_ps(windows, intervals):
    """How much of the windows (start, end) the union of the intervals covers."""
    covered = 0
    for w0, w1 in windows:
        end = w0
        for a, b in sorted((max(a, w0), min(b, w1)) for a, b in intervals if a < w1 and b > w0):
            covered += max(0, b - max(a, end))
            end = max(end, b)
    return covered


def float_ops_by_type(fn, *specs):
    """TF's profiler float-op count of fn traced at `specs` with its variables frozen: {op type: FLOPs}
    (the fused deformable conv has no count: trace under VCAR_DEFORM_IMPL=composite to include it)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    graph = convert_variables_to_constants_v2(tf.function(fn).get_concrete_function(*specs)).graph
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    counts, nodes = {}, [tf.compat.v1.profiler.profile(graph=graph, cmd="op", options=options)]
    while nodes:  # the op view nests each type under the previous one
        node = nodes.pop()
        if node.float_ops:
            counts[node.name] = counts.get(node.name, 0) + node.float_ops
        nodes.extend(node.children)
    return counts
