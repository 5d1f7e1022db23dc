import json
import os
import re
import shutil
import time

import numpy as np
import pytest

from tests.conftest import SHARED_DATA, make_planes, own_stderr, run_cli, shared_file, shared_rows
from vcar_tf.data.codec import x265_cli
from vcar_tf.data.layout import find_pairs, resolve_datasets
from vcar_tf.video import YuvSequence, write_yuv


def _files(folder):
    """The files of a dataset folder, but its lock (vcar_tf.fileutil.hold_folder_lock)."""
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs
                  if f != ".lock")


def test_prepare_cli_layout_sidecar_and_cache(tmp_path):
    out = tmp_path / "ds"
    srcs = [shared_file("ciscovt2people"), shared_file("vimeo-00002-0007")]
    r = run_cli("-m", "vcar_tf.cli.prepare", "--raw", *srcs, "--out", str(out), "--qp", "32", "37")
    assert r.returncode == 0, r.stderr
    assert "2 raw written, 4 encoded, 0 already done" in r.stdout
    files = _files(out)
    for qp in (32, 37):
        for name in ("ciscovt2people_320x192_9", "vimeo-00002-0007_448x256_7"):
            assert f"x265_LDP/QP{qp}/{name}.yuv" in files
            assert f"x265_LDP/QP{qp}/bitstreams/{name}.hevc" in files
            info = json.load(open(out / f"x265_LDP/QP{qp}/bitstreams/{name}.json"))
            assert info["settings"]["qp"] == qp and info["encoder_version"].startswith("x265")
            assert info["bitrate_kbps"] > 0 and info["frames"] == int(name.rsplit("_", 1)[1])
    assert "raw/ciscovt2people_320x192_9.yuv" in files
    assert not [f for f in files if ".tmp-" in f]
    stamps = {f: os.stat(out / f).st_mtime_ns for f in files}
    r = run_cli("-m", "vcar_tf.cli.prepare", "--raw", *srcs, "--out", str(out), "--qp", "32", "37")
    assert r.returncode == 0 and "0 raw written, 0 encoded, 4 already done" in r.stdout
    assert {f: os.stat(out / f).st_mtime_ns for f in _files(out)} == stamps  # no work redone
    pairs = find_pairs(str(out), 37)
    assert [p.name for p in pairs] == ["ciscovt2people_320x192_9", "vimeo-00002-0007_448x256_7"]


def test_prepare_reads_mfqe_layout_as_distributed(tmp_path):
    # MFQE 2.0: train_108/raw/Name_WxH_nfs.yuv next to train_108/HM16.5_LDP/QP37/ with the same names.
    root = tmp_path / "train_108"
    frames = [make_planes(64, 48, t) for t in range(5)]
    write_yuv(str(root / "raw" / "Kimono_64x48_5.yuv"), frames)
    write_yuv(str(root / "HM16.5_LDP" / "QP37" / "Kimono_64x48_5.yuv"), frames[::-1])
    (pair,) = find_pairs(str(root), 37)
    raw, comp = pair.open()
    np.testing.assert_array_equal(comp.y(0), frames[4][0])
    assert resolve_datasets(str(tmp_path)) == {"train_108": str(root)}
    # and the raw folder is a valid prepare input
    r = run_cli("-m", "vcar_tf.cli.prepare", "--raw", str(root / "raw"), "--out", str(tmp_path / "o"),
                "--qp", "37", "--codec", "x264")
    assert r.returncode == 0, r.stderr
    assert YuvSequence(str(tmp_path / "o" / "x264_LDP" / "QP37" / "Kimono_64x48_5.yuv")).num_frames == 5


def test_prepare_in_place_leaves_the_raw_sources_untouched(tmp_path):
    """MFQE's layout gains a QP in place (--raw DS/raw --out DS): the sources are read, never copied
    onto themselves, renamed or removed, and a second run does no work."""
    root = tmp_path / "train_108"
    source = root / "raw" / "Kimono_64x48_3.yuv"
    write_yuv(str(source), [make_planes(64, 48, t) for t in range(3)])
    before = os.stat(source)
    for expect in ("1 encoded, 0 already done", "0 raw written, 0 encoded, 1 already done"):
        r = run_cli("-m", "vcar_tf.cli.prepare", "--raw", str(root / "raw"), "--out", str(root),
                    "--preset", "ultrafast")
        assert r.returncode == 0 and expect in r.stdout, r.stderr
        after = os.stat(source)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(os.listdir(root / "raw")) == [".Kimono.source.json", "Kimono_64x48_3.yuv"]
    # a source whose name is not the dataset's (no frame count) would be renamed: refused, kept
    short = root / "raw" / "Kimono_64x48.yuv"
    os.replace(source, short)
    r = run_cli("-m", "vcar_tf.cli.prepare", "--raw", str(root / "raw"), "--out", str(root))
    assert r.returncode == 2 and "rename it so" in r.stderr and "Kimono_64x48_3.yuv" in r.stderr, r.stderr
    assert short.exists() and not source.exists()


def test_prepare_redoes_a_raw_source_read_at_another_size(tmp_path):
    """The frame size given by --width/--height is part of what a raw file was made from."""
    source = tmp_path / "clip.yuv"
    source.write_bytes(np.full(64 * 48 * 3 // 2 * 2, 128, np.uint8).tobytes())
    for size, name in ((("64", "48"), "clip_64x48_2.yuv"), (("32", "24"), "clip_32x24_8.yuv")):
        r = run_cli("-m", "vcar_tf.cli.prepare", "--raw", str(source), "--out", str(tmp_path / "ds"),
                    "--width", size[0], "--height", size[1], "--preset", "ultrafast")
        assert r.returncode == 0 and "1 raw written" in r.stdout, r.stderr
        assert [f for f in os.listdir(tmp_path / "ds" / "raw") if f.endswith(".yuv")] == [name]


def _sleep_then_mark(folder, i):
    open(os.path.join(folder, f"started-{i}"), "w").close()
    time.sleep(30)
    open(os.path.join(folder, f"finished-{i}"), "w").close()


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_an_interrupted_prepare_stops_its_running_and_queued_jobs(tmp_path, signum):
    """Ctrl-C or SIGTERM to the command (cli_main: KeyboardInterrupt or Terminated in the main
    thread) ends the pool's jobs at once: the running workers are killed, no queued job starts."""
    import signal
    import threading

    from vcar_tf.data.prepare import _run_parallel
    from vcar_tf.errors import cli_main

    @cli_main
    def command():
        _run_parallel(_sleep_then_mark, [(str(tmp_path), i) for i in range(6)], 2, "test")

    # Python's own Ctrl-C handler, whatever an earlier test in this process left installed
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(3.0, os.kill, (os.getpid(), getattr(signal, signum)))
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(SystemExit) as e:
            command()
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert e.value.code == {"SIGINT": 130, "SIGTERM": 143}[signum]
    assert time.monotonic() - start < 20
    time.sleep(1)  # a queued job that started now would show
    done = os.listdir(tmp_path)
    assert not [f for f in done if f.startswith("finished")] and len(done) <= 2, done


def test_prepare_turns_shared_sets_into_qp37_dataset(shared_qp37):
    out, summaries = shared_qp37
    for split in ("train", "test"):
        rows = shared_rows(split)
        pairs = find_pairs(os.path.join(out, split), 37, "x265_LDP")
        assert len(pairs) == len(rows)
        for row, pair in zip(sorted(rows, key=lambda r: r["name"]), pairs):
            raw, comp = pair.open()
            assert (raw.width, raw.height, raw.num_frames) == (int(row["width"]), int(row["height"]),
                                                                int(row["frames"]))
        psnr = [s["psnr_y"] for s in summaries[split]["sidecars"]]
        assert 27 <= np.mean(psnr) <= 34


def _bad_input_cases(tmp_path):
    ok_src = str(tmp_path / "good_32x16.yuv")  # valid: the bad part of each case is elsewhere
    with open(ok_src, "wb") as f:
        f.write(b"\x80" * (32 * 16 * 3 // 2 * 2))
    trunc = tmp_path / "trunc_32x16.yuv"
    trunc.write_bytes(b"\1" * (32 * 16 * 3 // 2 * 3 - 5))
    odd = tmp_path / "odd_33x17.yuv"
    odd.write_bytes(b"\1" * 5000)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(3000))
    tiny = tmp_path / "tiny_18x10.yuv"
    tiny.write_bytes(b"\x80" * (18 * 10 * 3 // 2 * 3))
    empty = tmp_path / "empty_32x16.yuv"
    empty.write_bytes(b"")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    manifests = {}
    for name, content in (("binary", b"file\tsplit\n\xdb\xff\n"), ("columns", b"name\tsplit\na.yuv\ttrain\n"),
                          ("short", b"name\tfile\tsplit\nx\n"), ("missing", b"file\tsplit\nnope.yuv\ttrain\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "MANIFEST.tsv").write_bytes(content)
        manifests[name] = str(tmp_path / name)
    for twin in ("twin1", "twin2"):  # two sources that would be one sequence
        (tmp_path / twin).mkdir()
        shutil.copyfile(ok_src, tmp_path / twin / "good_32x16.yuv")
    return [
        (["--raw", str(trunc)], "not a multiple"),
        (["--raw", str(odd)], "even width and height"),
        (["--raw", str(junk)], "cannot decode|zero frames|no video"),
        (["--raw", str(empty)], "zero frames"),
        (["--raw", ok_src, "--qp", "60"], "QP must be in 0..51"),
        (["--raw", ok_src, "--qp", "-1"], "QP must be in 0..51"),
        (["--raw", ok_src, "--codec", "vp9"], "invalid choice"),
        (["--raw", str(tmp_path / "missing.yuv")], "no such file"),
        (["--raw", str(tmp_path), "--split", "train"], "needs a folder with a MANIFEST.tsv"),
        (["--raw", manifests["binary"], "--split", "train"], "MANIFEST.tsv: not a UTF-8 text file"),
        (["--raw", manifests["columns"], "--split", "train"], "MANIFEST.tsv: no 'file' column"),
        (["--raw", manifests["short"]], "MANIFEST.tsv, line 2: no file named"),
        (["--raw", manifests["missing"], "--split", "train"], "MANIFEST.tsv, line 2: .*nope.yuv: no such file"),
        (["--raw", str(tmp_path / "twin1"), str(tmp_path / "twin2")], "would both be the sequence 'good'"),
        (["--raw", ok_src, "--gop", "ra", "--qp", "37", "--crf", "30"], "--qp and --crf exclude each other"),
        (["--raw", ok_src, "--crf", "30"], "--crf is for --gop ra"),
        (["--raw", ok_src, "--gop", "ra", "--crf", "52"], "CRF must be in 0..51"),
        (["--raw", ok_src, "--gop", "ra", "--codec", "x264"], "x264 has --gop ldp only"),
        (["--raw", ok_src, "--gop", "ra", "--hm_ldp_offsets"], "not with --gop ra"),
        (["--raw", ok_src, "--gop", "ra", "--hm-ldp-offsets"], "not with --gop ra"),  # the dashed spelling
        (["--raw", ok_src, "--gop", "b"], "invalid choice"),
        (["--raw", ok_src, "--preset", "bogus"], "invalid choice"),
        (["--raw", str(tiny)], "^error: .*tiny_18x10.yuv: x265 encodes pictures of at least 16x16, not 18x10$"),
        (["--raw", ok_src, "--split", "train"], "--split picks rows of a folder's MANIFEST.tsv; .* is a file"),
        (["--raw", ok_src, "--width", "32"], "give --width and --height together"),
        (["--raw", str(junk), "--width", "32", "--height", "16"], "are for .yuv sources"),
    ] + ([(["--raw", str(tiny), "--hm-ldp-offsets"], "^error: .*tiny_18x10.yuv: x265 encodes pictures of at least 16x16")]
         if x265_cli() else []), blocker


def test_bad_input_one_line_error_no_partial_output(tmp_path):
    cases, blocker = _bad_input_cases(tmp_path)
    ok_src = cases[4][0][1]
    for i, (args, pattern) in enumerate(cases):
        out = tmp_path / f"out{i}"
        r = run_cli("-m", "vcar_tf.cli.prepare", *args, "--out", str(out))
        lines = own_stderr(r.stderr).splitlines()  # progress bars, then the one error line
        assert r.returncode == 2 and lines[-1].startswith("error: ") and "Traceback" not in r.stderr, (args, r.stderr)
        assert sum("error" in line.lower() for line in lines) == 1 and re.search(pattern, lines[-1]), (args, r.stderr)
        assert not [f for f in (_files(out) if out.exists() else []) if not f.endswith(".json")], args
        assert not [f for f in (_files(out) if out.exists() else []) if f.endswith(".yuv") or ".tmp-" in f]
    # a first prepare that fails before finishing a file leaves no folder; one that finished some keeps them
    odd = cases[1][0][1]
    r = run_cli("-m", "vcar_tf.cli.prepare", "--raw", odd, "--out", str(tmp_path / "fresh"))
    assert r.returncode == 2 and not (tmp_path / "fresh").exists(), r.stderr
    r = run_cli("-m", "vcar_tf.cli.prepare", "--raw", ok_src, odd, "--out", str(tmp_path / "checked"))
    assert r.returncode == 2 and not (tmp_path / "checked").exists(), r.stderr  # .yuv sizes: before any work
    junk = cases[2][0][1]  # found out only by decoding it
    r = run_cli("-m", "vcar_tf.cli.prepare", "--raw", ok_src, junk, "--out", str(tmp_path / "partly"),
                "--workers", "1")
    assert r.returncode == 2 and (tmp_path / "partly" / "raw" / "good_32x16_2.yuv").exists(), r.stderr
    # an output folder that cannot be written (its parent is a file)
    r = run_cli("-m", "vcar_tf.cli.prepare", "--raw", ok_src, "--out", str(blocker / "sub"))
    assert r.returncode == 2 and r.stderr.strip().startswith("error: cannot create output folder")
    assert len(r.stderr.strip().splitlines()) == 1


def test_missing_codec_in_ffmpeg_build(monkeypatch, capsys, tmp_path):
    from vcar_tf.cli import prepare
    from vcar_tf.data import codec

    monkeypatch.setattr(codec.av, "codecs_available", {"hevc", "h264"})
    with pytest.raises(SystemExit) as e:
        prepare.main(["--raw", shared_file("ciscovt2people"), "--out", str(tmp_path / "o"), "--codec", "x264"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: codec libx264 is missing from this FFmpeg build"]
    assert not (tmp_path / "o" / "raw").exists()


def test_split_val_selects_the_manifest_val_rows():
    from vcar_tf.data.prepare import find_sources

    rows = shared_rows("val")
    assert rows, "the shared manifest has a val split"
    sources = find_sources([SHARED_DATA], "val")
    assert sorted(os.path.basename(s) for s in sources) == sorted(os.path.basename(r["file"]) for r in rows)
    assert not set(sources) & set(find_sources([SHARED_DATA], "train"))


def _panning_frames(width=160, height=96, n=17, step=3):
    """A smooth random texture panning `step` px a frame: every frame differs from its neighbours."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(7)
    big = gaussian_filter(rng.normal(size=(height, width + step * n)), 2.0)
    big = np.clip(128 + big / big.std() * 50, 0, 255).astype(np.uint8)
    chroma = np.full((height // 2, width // 2), 128, np.uint8)
    return [(big[:, t * step: t * step + width].copy(), chroma, chroma) for t in range(n)]


@pytest.fixture(scope="module")
def ra_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ra") / "test"
    frames = _panning_frames()
    src = out.parent / "pan_160x96.yuv"
    write_yuv(str(src), frames)
    r = run_cli("-m", "vcar_tf.cli.prepare", "--raw", str(src), "--out", str(out), "--gop", "ra",
                "--crf", "24", "--deblock", "--sao")
    assert r.returncode == 0, r.stderr
    return out, frames


def test_prepare_random_access_crf_folder_sidecar_and_display_order(ra_dataset):
    import av

    out, frames = ra_dataset
    name = "pan_160x96_17"
    comp = out / "x265_RA_dbk_sao" / "CRF24"
    info = json.load(open(comp / "bitstreams" / f"{name}.json"))
    assert info["settings"]["gop"] == "ra" and info["settings"]["crf"] == 24
    assert info["settings"]["qp"] is None and info["settings"]["ref"] is None
    assert info["encoder_params"] == "crf=24:frame-threads=1:log-level=error"
    assert "bframes=4" in info["encoder_options"] and "rc=crf crf=24.0" in info["encoder_options"]
    with av.open(str(comp / "bitstreams" / f"{name}.hevc"), format="hevc") as c:
        types = [av.video.frame.PictureType(f.pict_type).name for f in c.decode(video=0)]
    assert "B" in types  # decoding order differs from display order
    # the decoded sequence is in display order: frame t is nearest to raw frame t, not a neighbour
    (pair,) = find_pairs(str(out), crf=24)
    raw, dec = pair.open()
    for t in range(raw.num_frames):
        err = [np.mean((raw.y(s).astype(float) - dec.y(t)) ** 2) for s in range(raw.num_frames)]
        assert int(np.argmin(err)) == t and err[t] * 4 < min(e for s, e in enumerate(err) if s != t), t
    np.testing.assert_array_equal(raw.y(5), frames[5][0])
    with pytest.raises(Exception, match="no compressed QP37 folder"):
        find_pairs(str(out), 37)


def test_evaluate_a_preset_on_a_crf_folder(ra_dataset, tmp_path):
    from vcar_tf.cli import evaluate
    from vcar_tf.reporting import read_report

    out, _ = ra_dataset
    assert evaluate.main(["--preset", "arcnn_x265_qp37", "--data", str(out), "--crf", "24",
                          "--codec-folder", "x265_RA_dbk_sao", "--out", str(tmp_path / "e")]) == 0
    _, rows = read_report(str(tmp_path / "e"))
    assert [r["sequence"] for r in rows] == ["pan_160x96_17", "average"]
    assert "at CRF24" in (tmp_path / "e" / "report.md").read_text()
    from vcar_tf.cli import report

    assert report.main(["--data", str(out), "--crf", "24", "--out", str(tmp_path / "b")]) == 0
    assert "Compressed baseline, CRF24" in (tmp_path / "b" / "report.md").read_text()
