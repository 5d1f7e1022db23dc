"""Atomic file writes and writable-folder checks."""

import contextlib
import os
import tempfile

from vcar_tf.errors import VcarError


def ensure_writable_dir(path):
    """Create `path` if needed and fail with one clear line if it cannot be written."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise VcarError(f"cannot create output folder {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise VcarError(f"output folder is not writable: {path}")
    return path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside `path`; it is renamed onto `path` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    ensure_writable_dir(folder)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_bytes_atomic(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text_atomic(path, text):
    write_bytes_atomic(path, text.encode("utf-8"))
