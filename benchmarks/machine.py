"""One-line description of the machine a benchmark ran on."""

import os
import platform


def describe():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f", {int(f.readline().split()[1]) / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    return f"{cpu}, {cores} cores{mem}, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def publish(title, body, out=None):
    """Print a benchmark result headed by the machine and the exact command; also write it to `out`."""
    import sys

    text = f"# {title}\n\nMachine: {describe()}\n\nCommand: `python {' '.join(sys.argv)}`\n\n{body}"
    print(text)
    if out:
        from vcar_tf.fileutil import write_text_atomic

        write_text_atomic(out, text)
    return text
