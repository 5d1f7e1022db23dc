"""A ceiling for TensorFlow's oneDNN CPU allocator, set when vcar_tf is imported.

TensorFlow's x86 builds allocate large tensors from a oneDNN pool (a BFC allocator, "mklcpu" in
its messages) that keeps what it frees and, by default, may grow to the machine's whole memory:
a whole-frame NL-ConvLSTM evaluation at 1024x576 after smaller sequences was killed by the kernel
at 24.3 GB on a 24 GiB machine. With a ceiling the pool reuses its free blocks and, where they do
not suffice, fails with a ResourceExhaustedError instead of a kill. TensorFlow reads
TF_MKL_ALLOC_MAX_BYTES when it creates its CPU allocator, so the ceiling applies where vcar_tf is
imported before TensorFlow runs its first op (every vcar_tf command); a value already in the
environment is kept.
"""

import os

ENV = "TF_MKL_ALLOC_MAX_BYTES"
FRACTION = 0.8  # of the memory this process may use
CGROUP_LIMIT = "/sys/fs/cgroup/memory.max"  # cgroup v2: a container's limit, or "max"


def memory_limit_bytes(cgroup_limit=CGROUP_LIMIT):
    """The physical memory, or a container's smaller limit; None where neither is known."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = None
    try:
        with open(cgroup_limit) as f:
            limit = int(f.read().strip())
    except (OSError, ValueError):  # no cgroup v2 file, or "max"
        return total
    return min(total, limit) if total else limit


def cap_onednn_allocator(environ=os.environ, cgroup_limit=CGROUP_LIMIT):
    """Set TF_MKL_ALLOC_MAX_BYTES to FRACTION of memory_limit_bytes() unless it is set; returns it."""
    if ENV not in environ:
        limit = memory_limit_bytes(cgroup_limit)
        if limit:
            environ[ENV] = str(int(limit * FRACTION))
    return environ.get(ENV)
