"""Atomic file writes, text reads that fail in one line, and writable-folder checks."""

import contextlib
import fcntl
import fnmatch
import os
import shutil
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


def check_writable_dir(path):
    """Fail with one clear line now if `path` could not be created or written later; creates nothing."""
    missing = _missing_folders(os.path.abspath(path))
    probe = os.path.dirname(missing[-1]) if missing else os.path.abspath(path)
    if not os.path.isdir(probe):
        raise VcarError(f"cannot create output folder {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise VcarError(f"output folder is not writable: {probe}")
    return path


def check_writable_file(path, what="a file"):
    """Fail with one clear line now if the file `path` could not be written later; creates nothing."""
    if os.path.isdir(path):
        raise VcarError(f"{path} is a folder, not {what}")
    return check_writable_dir(os.path.dirname(os.path.abspath(path)))


def _umasked(mode):
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def make_temp_dir(parent, prefix):
    """A temp folder in `parent`, to be renamed into place: made with the umask's mode, not
    mkdtemp's 0700, so the folder it becomes reads like any other (a preset, a run)."""
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(tmp, _umasked(0o777))
    return tmp


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside `path`; it is renamed onto `path` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    missing = _missing_folders(folder)
    ensure_writable_dir(folder)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    os.chmod(tmp, _umasked(0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        for created in missing:  # the folders made for `path`, deepest first, where still empty
            with contextlib.suppress(OSError):
                os.rmdir(created)
        raise


def _missing_folders(folder):
    """The folders of `folder`'s path that do not exist yet, deepest first."""
    missing = []
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def write_bytes_atomic(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text_atomic(path, text):
    write_bytes_atomic(path, text.encode("utf-8"))


def read_text(path):
    """A UTF-8 text file's contents; a file of other bytes is a one-line VcarError."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise VcarError(f"{path}: not a UTF-8 text file (byte {e.start} is {e.object[e.start]:#04x})") from None


LOCK_NAME = ".lock"


@contextlib.contextmanager
def hold_folder_lock(folder, what, wait=False):
    """Hold `folder`'s lock (flock on folder/.lock, released by the kernel however the process
    ends) so that two processes never write the folder at once; fails at once if another holds
    it (or, with `wait`, waits for it). `what` names the writer in the message (e.g. "training")."""
    ensure_writable_dir(folder)
    fd = os.open(os.path.join(folder, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise VcarError(f"{folder} is in use by another {what} (pid {holder}); wait for it to end") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def sweep_temps(folder, patterns=(".tmp-*",)):
    """Remove what killed writers left in `folder` (names matching `patterns`); call it only while
    holding the folder's lock. Returns the names removed."""
    removed = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if any(fnmatch.fnmatch(name, p) for p in patterns):
                path = os.path.join(folder, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)
                removed.append(name)
    return removed
