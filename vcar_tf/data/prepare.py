"""Make an MFQE-2.0-style dataset from source video: raw YUV plus compressed versions per QP
(the command is vcar-prepare, vcar_tf/cli/prepare.py).

It writes DIR/raw/NAME_WxH_N.yuv, DIR/<codec>_LDP[_hmqp][_dbk][_sao]/QP<qp>/NAME_WxH_N.yuv and, in
its bitstreams/ folder, each bitstream with a JSON sidecar. A finished output is never redone.
"""

import concurrent.futures as cf
import contextlib
import csv
import fnmatch
import ctypes
import ctypes.util
import io
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys

import numpy as np
from tqdm import tqdm

from vcar_tf.data.codec import CODECS, check_codec_available, check_picture_size, dumps, encode, sidecar
from vcar_tf.errors import VcarError
from vcar_tf.fileutil import (LOCK_NAME, atomic_path, ensure_writable_dir, hold_folder_lock, read_text, sweep_temps,
                              write_text_atomic)
from vcar_tf.metrics import psnr_y
from vcar_tf.video import VIDEO_EXTENSIONS, decode_frames, write_yuv, yuv_name
from vcar_tf.video.yuv import YuvSequence, parse_yuv_name

TEMP_PATTERNS = (".tmp-*", ".*.decoded.yuv")  # what a killed or failed writer leaves


def _manifest_files(folder, split):
    """Files listed in a MANIFEST.tsv (the shared-data layout), optionally of one split."""
    path = os.path.join(folder, "MANIFEST.tsv")
    rows = list(csv.DictReader(io.StringIO(read_text(path)), delimiter="\t"))
    if rows and "file" not in rows[0]:
        raise VcarError(f"{path}: no 'file' column (a tab-separated table with a header row)")
    files = []
    for line, row in enumerate(rows, 2):
        if split not in (None, row.get("split")):
            continue
        if not (row.get("file") or "").strip():
            raise VcarError(f"{path}, line {line}: no file named")
        files.append(os.path.join(folder, row["file"]))
        if not os.path.isfile(files[-1]):
            raise VcarError(f"{path}, line {line}: {files[-1]}: no such file")
    return files


def find_sources(inputs, split=None):
    """Expand files and folders into a sorted list of source video files."""
    sources = []
    for item in inputs:
        if os.path.isdir(item):
            if os.path.exists(os.path.join(item, "MANIFEST.tsv")):
                sources += _manifest_files(item, split)
            elif split:
                raise VcarError(f"--split needs a folder with a MANIFEST.tsv; {item} has none")
            else:
                sources += [os.path.join(item, n) for n in sorted(os.listdir(item))
                            if n.lower().endswith(VIDEO_EXTENSIONS) and not n.startswith(".")]
        elif os.path.isfile(item):
            if split:
                raise VcarError(f"--split picks rows of a folder's MANIFEST.tsv; {item} is a file")
            sources.append(item)
        else:
            raise VcarError(f"{item}: no such file or folder")
    if not sources:
        raise VcarError(f"no video files found in {' '.join(inputs)}")
    by_name = {}
    for source in sources:
        other = by_name.setdefault(sequence_stem(source), source)
        if os.path.abspath(other) != os.path.abspath(source):
            raise VcarError(f"{other} and {source} would both be the sequence {sequence_stem(source)!r}: "
                            f"rename one")
    return list(by_name.values())


def sequence_stem(source):
    """The name a source's sequence gets in the dataset (a raw NAME_WxH_N.yuv keeps its NAME)."""
    parsed = parse_yuv_name(source)
    return parsed[0] if parsed else os.path.splitext(os.path.basename(source))[0]


def _fingerprint(path):
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def prepare_raw(source, out_dir, width=None, height=None):
    """Write one source as out_dir/raw/NAME_WxH_N.yuv; returns (path, did_work)."""
    raw_dir = os.path.join(out_dir, "raw")
    stem = sequence_stem(source)
    record_path = os.path.join(raw_dir, f".{stem}.source.json")
    record = _load_json(record_path)
    src = {"source": os.path.abspath(source), **_fingerprint(source)}
    is_yuv = source.lower().endswith(".yuv")
    path = raw_yuv_path(source, raw_dir, width, height) if is_yuv else None  # its name holds the size read
    if record and record.get("source_info") == src and (path is None or record["file"] == os.path.basename(path)):
        done = os.path.join(raw_dir, record["file"])
        if os.path.exists(done) and os.path.getsize(done) == record["bytes"]:
            return done, False
    in_place = is_in_folder(source, raw_dir)
    if is_yuv:
        if not in_place:
            with atomic_path(path) as tmp:
                shutil.copyfile(source, tmp)
    else:  # stream the decode: the frame count, and so the final name, is known only at the end
        partial = os.path.join(raw_dir, f".{stem}.decoded.yuv")
        shapes = []

        def frames():
            for planes in decode_frames(source):
                shapes.append(planes[0].shape)
                yield planes

        n = write_yuv(partial, frames())
        height, width = shapes[0]
        path = os.path.join(raw_dir, yuv_name(stem, width, height, n))
        os.replace(partial, path)
    if not in_place:  # the raw folder is the user's own: leave its other files be
        remove_other_cuts(raw_dir, os.path.basename(path))
    write_text_atomic(record_path, dumps({"source_info": src, "file": os.path.basename(path),
                                          "bytes": os.path.getsize(path)}))
    return path, True


def raw_yuv_path(source, raw_dir, width=None, height=None):
    """Where a .yuv source goes in the dataset: raw_dir/NAME_WxH_N.yuv."""
    seq = YuvSequence(source, width, height)
    return os.path.join(raw_dir, yuv_name(sequence_stem(source), seq.width, seq.height, seq.num_frames))


def is_in_folder(path, folder):
    return os.path.isdir(folder) and os.path.samefile(os.path.dirname(os.path.abspath(path)), folder)


def check_sources(sources, out_dir, settings_list, width=None, height=None):
    """Refuse, before any work: a .yuv source of a size or length it does not have, or too small
    to encode; a source in OUT/raw (the MFQE layout prepared in place) without its dataset name,
    since it is used as it is; a frame size given for a container."""
    if (width is None) != (height is None):
        raise VcarError("give --width and --height together")
    raw_dir = os.path.join(out_dir, "raw")
    for source in sources:
        is_yuv = source.lower().endswith(".yuv")
        if width is not None and not is_yuv:
            raise VcarError(f"--width and --height are for .yuv sources; {source} carries its own size")
        if is_yuv:
            seq = YuvSequence(source, width, height)
            for settings in settings_list:
                try:
                    check_picture_size(settings, seq.width, seq.height)
                except VcarError as e:
                    raise VcarError(f"{source}: {e}") from None
        if is_in_folder(source, raw_dir):
            want = raw_yuv_path(source, raw_dir, width, height) if is_yuv else None
            if want is None or os.path.basename(source) != os.path.basename(want):
                raise VcarError(f"{source} is in {raw_dir}, where the dataset's raw file would be "
                                f"{os.path.basename(want) if want else 'NAME_WxH_N.yuv'}: rename it so, or "
                                "choose another --out")


def remove_other_cuts(folder, keep):
    """Remove the sequences of `folder` with the same NAME as `keep` (NAME_WxH_N.yuv) but another
    size or frame count, left by an earlier cut of the same source, so nothing reads both."""
    name = parse_yuv_name(keep)[0]
    for other in os.listdir(folder):
        parsed = parse_yuv_name(other) if other.endswith(".yuv") and not other.startswith(".") else None
        if parsed and parsed[0] == name and other != keep:
            os.remove(os.path.join(folder, other))


def compress(raw_path, out_dir, settings):
    """Encode one raw sequence, decode it back to YUV, record the sidecar; returns (sidecar, did_work)."""
    base = os.path.basename(raw_path)
    comp_dir = os.path.join(out_dir, settings.folder)
    bit_dir = os.path.join(comp_dir, "bitstreams")
    stem = base[:-4]
    bit_path = os.path.join(bit_dir, stem + CODECS[settings.codec][3])
    json_path = os.path.join(bit_dir, stem + ".json")
    yuv_path = os.path.join(comp_dir, base)
    raw_fp = _fingerprint(raw_path)
    done = _load_json(json_path)
    if (done and done.get("settings") == settings.to_json() and done.get("raw") == raw_fp
            and os.path.exists(yuv_path) and os.path.exists(bit_path)):
        return done, False
    raw = YuvSequence(raw_path)
    ensure_writable_dir(bit_dir)
    with atomic_path(bit_path) as tmp_bits:
        try:
            n = encode(iter(raw), settings, tmp_bits)
        except VcarError as e:  # named by its sequence, not the temp file's path
            raise VcarError(f"{base}: {str(e).replace(tmp_bits + ': ', '')}") from None
        decoded = list(decode_frames(tmp_bits))
        if len(decoded) != n:
            raise VcarError(f"{base}: encoded {n} frames but decoded {len(decoded)}")
        write_yuv(yuv_path, decoded)
        remove_other_cuts(comp_dir, base)
        with open(tmp_bits, "rb") as f:
            bits = f.read()
    info = sidecar(settings, bits, n, raw.width, raw.height)
    info["raw"] = raw_fp
    info["psnr_y"] = float(np.mean([psnr_y(raw.y(t), d[0]) for t, d in enumerate(decoded)]))
    write_text_atomic(json_path, dumps(info))
    return info, True


def die_with_parent():
    """Pool initializer: on Linux, a worker gets SIGKILL when the process that started it dies
    (even by kill -9), instead of encoding on into the output and never exiting."""
    # the parent stops the pool (Ctrl-C, SIGTERM) by terminating its workers: SIGTERM must kill one
    # (not raise cli_main's Terminated inside a job, after which it would take the next), and Ctrl-C
    # reaches the parent alone
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl
        os._exit(1)


PR_SET_PDEATHSIG = 1


def _run_parallel(fn, jobs, workers, desc):
    """Run fn(*job) over jobs in a process pool with a progress bar; results in job order."""
    results = [None] * len(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(tqdm(jobs, desc=desc, unit="seq", file=sys.stderr)):
            results[i] = fn(*job)
        return results
    others = set(mp.active_children())
    pool = cf.ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent)
    try:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        for fut in tqdm(cf.as_completed(futures), total=len(jobs), desc=desc, unit="seq",
                        file=sys.stderr):
            results[futures[fut]] = fut.result()
    except BaseException:  # a failure, Ctrl-C or SIGTERM: stop the queued jobs and the running ones
        pool.shutdown(wait=False, cancel_futures=True)
        workers_alive = [p for p in mp.active_children() if p not in others]
        for p in workers_alive:
            p.terminate()
        for p in workers_alive:
            p.join()
        raise
    pool.shutdown()
    return results


def prepare_dataset(sources, out_dir, settings_list, workers=None, width=None, height=None):
    """Raw + compressed dataset for every source and every settings; returns a summary dict."""
    for s in settings_list:
        check_codec_available(s)
    check_sources(sources, out_dir, settings_list, width, height)
    workers = workers or os.cpu_count() or 1
    new_folder = not os.path.exists(out_dir)
    try:
        with hold_dataset_lock(out_dir, settings_list):
            raws = _run_parallel(prepare_raw, [(s, out_dir, width, height) for s in sources], workers, "raw")
            summary = _compress_all([p for p, _ in raws], out_dir, settings_list, workers)
    except BaseException:
        if new_folder:
            remove_if_nothing_kept(out_dir)
        raise
    summary["raw_written"] = sum(w for _, w in raws)
    return summary


def remove_if_nothing_kept(out_dir):
    """Remove a dataset folder that a failed first prepare made, when it holds nothing but folders,
    its lock and what a failed writer leaves (TEMP_PATTERNS); a folder with any finished file stays,
    a cache for the next run."""
    for folder, _, files in os.walk(out_dir):
        if any(folder != out_dir or name != LOCK_NAME for name in files
               if not any(fnmatch.fnmatch(name, p) for p in TEMP_PATTERNS)):
            return
    shutil.rmtree(out_dir, ignore_errors=True)


@contextlib.contextmanager
def hold_dataset_lock(out_dir, settings_list, wait=False):
    """One prepare at a time writes a dataset; what killed ones left (temp files, partial
    decodes) is swept once the lock is held."""
    with hold_folder_lock(out_dir, "vcar-prepare", wait):
        folders = [os.path.join(out_dir, "raw")]
        for s in settings_list:
            folders += [os.path.join(out_dir, s.folder), os.path.join(out_dir, s.folder, "bitstreams")]
        for folder in folders:
            sweep_temps(folder, TEMP_PATTERNS)
        try:
            yield
        except BaseException:
            for folder in folders:  # what stopped workers left
                sweep_temps(folder, TEMP_PATTERNS)
            raise


def compress_all(raw_paths, out_dir, settings_list, workers=None):
    """Compress raw sequences already in out_dir/raw with every settings, in parallel (after any
    other process compressing into out_dir has finished)."""
    with hold_dataset_lock(out_dir, settings_list, wait=True):
        return _compress_all(raw_paths, out_dir, settings_list, workers)


def _compress_all(raw_paths, out_dir, settings_list, workers):
    jobs = [(path, out_dir, s) for s in settings_list for path in raw_paths]
    comps = _run_parallel(compress, jobs, workers or os.cpu_count() or 1, "encode")
    return {"raw": list(raw_paths), "encoded": sum(w for _, w in comps),
            "cached": sum(not w for _, w in comps), "sidecars": [c for c, _ in comps]}
