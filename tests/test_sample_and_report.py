import csv
import glob
import hashlib
import os

import numpy as np

from tests.conftest import own_stderr, run_cli
from vcar_tf.data.layout import find_pairs, prepared_codec_folder
from vcar_tf.data.sample import SHOTS, ensure_sample_dataset


def _digests(root):
    return {os.path.relpath(p, root): hashlib.sha256(open(p, "rb").read()).hexdigest()
            for p in glob.glob(os.path.join(root, "**", "*.yuv"), recursive=True)}


def test_sample_is_real_content_deterministic_and_cached(sample_cache, tmp_path):
    cache, root = sample_cache
    assert {s.split for s in SHOTS} == {"train", "test"}
    for shot in SHOTS:
        assert 30 <= shot.frames <= 60 and 256 <= max(shot.width, shot.height) <= 480
    train = find_pairs(os.path.join(root, "train"), 37)
    test = find_pairs(os.path.join(root, "test"), 37)
    assert len(train) == 3 and len(test) == 1
    raw, comp = train[0].open()
    y = raw.luma().astype(np.float32)
    assert y.std() > 20  # photographic content, not flat
    assert np.abs(np.diff(y, axis=0)).mean() > 1  # the camera moves
    # a second build in another cache gives the same bytes, raw and compressed
    again = ensure_sample_dataset(cache_dir=str(tmp_path))
    assert _digests(root) == _digests(again)
    # cached: no file is rewritten
    stamps = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(root, "**", "*"), recursive=True)}
    ensure_sample_dataset(cache_dir=cache)
    assert stamps == {p: os.stat(p).st_mtime_ns for p in stamps}


def test_the_sample_s_codec_folder_is_the_one_prepared_for_the_run_or_model(tmp_path):
    """The sample's cache may hold several compressions at one QP (int8's calibration caches the
    default one beside a preset's): the commands read the one they prepared, not an ambiguity."""
    import pytest

    from vcar_tf.data.codec import CodecSettings
    from vcar_tf.errors import VcarError

    filters = CodecSettings(qp=37, deblock=True, sao=True)
    root = ensure_sample_dataset([CodecSettings(qp=37), filters], cache_dir=str(tmp_path))
    with pytest.raises(VcarError, match="several QP37 codec folders"):
        find_pairs(os.path.join(root, "test"), 37)
    for settings, folder in ((None, "x265_LDP"), (filters, "x265_LDP_dbk_sao")):
        assert prepared_codec_folder(None, settings) == prepared_codec_folder("sample", settings) == folder
        assert find_pairs(os.path.join(root, "test"), 37, folder)[0].compressed_path.split(os.sep)[-3] == folder
    assert prepared_codec_folder(None, filters, "x264_LDP") == "x264_LDP"  # asked for
    assert prepared_codec_folder(str(tmp_path), filters) is None  # a dataset of the user's: find_pairs decides


def test_report_cli_main_job_on_sample(sample_cache, tmp_path):
    cache, _ = sample_cache
    out = tmp_path / "rep"
    r = run_cli("-m", "vcar_tf.cli.report", "--out", str(out), env={"VCAR_TF_CACHE": cache})
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(out / "report.csv")))
    assert [r_["sequence"] for r_ in rows if r_["split"] == "test"] == ["motorcycle-pan_416x240_32", "average"]
    for row in rows:
        assert 25 < float(row["psnr"]) < 40 and 0.7 < float(row["ssim"]) < 1 and float(row["sd"]) >= 0
    assert "| PSNR (dB) |" in (out / "report.md").read_text()
    pngs = sorted(os.listdir(out / "curves"))
    assert len(pngs) == 4 and all(open(out / "curves" / p, "rb").read(4) == b"\x89PNG" for p in pngs)


def test_report_errors(tmp_path):
    r = run_cli("-m", "vcar_tf.cli.report", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and own_stderr(r.stderr) == f"error: dataset not found: {tmp_path / 'nope'}"


def test_report_on_a_dataset_without_compressed_twins_leaves_no_output_folder(tmp_path):
    (tmp_path / "data" / "raw").mkdir(parents=True)
    r = run_cli("-m", "vcar_tf.cli.report", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "has no compressed QP37 folder" in own_stderr(r.stderr)
    assert not (tmp_path / "o").exists()


def _tiny_dataset(root, names, frames=3):
    from vcar_tf.video import write_yuv
    from tests.conftest import make_planes

    for name in names:
        planes = [make_planes(64, 48, t) for t in range(frames)]
        write_yuv(str(root / "raw" / f"{name}_64x48_{frames}.yuv"), planes)
        write_yuv(str(root / "x265_LDP" / "QP37" / f"{name}_64x48_{frames}.yuv"), planes[::-1])


def test_report_checks_every_file_before_its_folder_and_keeps_only_its_own_curves(tmp_path):
    """A truncated compressed file is said before --out is made; a second report into the same
    --out leaves no curve of the first one's sequences."""
    _tiny_dataset(tmp_path / "a", ["one", "two"])
    _tiny_dataset(tmp_path / "b", ["three"])
    bad = tmp_path / "a" / "x265_LDP" / "QP37" / "two_64x48_3.yuv"
    good = bad.read_bytes()
    bad.write_bytes(good[:5000])
    r = run_cli("-m", "vcar_tf.cli.report", "--data", str(tmp_path / "a"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "not a multiple" in own_stderr(r.stderr) and not (tmp_path / "o").exists()
    bad.write_bytes(good)
    for data, want in (("a", ["a-one_64x48_3.png", "a-two_64x48_3.png"]), ("b", ["b-three_64x48_3.png"])):
        r = run_cli("-m", "vcar_tf.cli.report", "--data", str(tmp_path / data), "--out", str(tmp_path / "o"))
        assert r.returncode == 0, r.stderr
        assert sorted(os.listdir(tmp_path / "o" / "curves")) == want


def test_report_at_a_crf_compresses_the_sample_in_random_access(sample_cache, tmp_path):
    """vcar-report --crf N without --data reports the sample at CRF N (x265 RA), as vcar-prepare
    --gop ra --crf N would make it."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(sample_cache[0], cache)
    r = run_cli("-m", "vcar_tf.cli.report", "--crf", "40", "--out", str(tmp_path / "o"), env={"VCAR_TF_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    assert "Compressed baseline, CRF40" in (tmp_path / "o" / "report.md").read_text()


def test_evaluate_names_a_missing_dataset_before_it_loads_a_model(tmp_path):
    r = run_cli("-m", "vcar_tf.cli.evaluate", "--preset", "dncnn_x265_qp37", "--data", str(tmp_path / "nope"),
                "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and own_stderr(r.stderr) == f"error: dataset not found: {tmp_path / 'nope'}"
    assert not (tmp_path / "o").exists()
