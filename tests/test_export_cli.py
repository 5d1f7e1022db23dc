import os
import csv

import numpy as np
import pytest

from tests.conftest import REPO, fused_op_or_skip


def test_export_and_evaluate_commands_with_tflite_and_onnx(sample_cache, tmp_path, monkeypatch, capsys):
    """vcar-export --format tflite|onnx on a run, then vcar-evaluate --exported FILE: the same
    ΔPSNR as the Keras model on the sample's held-out sequence (416x240); bad flags: exit 2."""
    from vcar_tf.cli import evaluate, export
    from vcar_tf.data.layout import find_pairs
    from vcar_tf.inference.sequence import evaluate_pairs
    from vcar_tf.train.run import load_run

    cache, root = sample_cache
    monkeypatch.setenv("VCAR_TF_CACHE", cache)
    run = f"{REPO}/tests/legacy/run_arcnn"
    paths = {}
    for fmt, extra in (("tflite", ["--height", "240", "--width", "416"]), ("onnx", [])):
        assert export.main(["--model_dir", run, "--format", fmt, "--out", str(tmp_path), *extra]) == 0
        paths[fmt] = capsys.readouterr().out.split("exported ")[-1].strip()
    assert paths["tflite"].endswith("arcnn_240x416_fp32.tflite") and paths["onnx"].endswith("arcnn.onnx")
    onnx_bytes = open(paths["onnx"], "rb").read()
    with pytest.raises(SystemExit) as refused:  # an existing file is replaced only with --overwrite
        export.main(["--model_dir", run, "--format", "onnx", "--out", str(tmp_path)])
    assert refused.value.code == 2 and "arcnn.onnx exists; pass --overwrite" in capsys.readouterr().err
    assert open(paths["onnx"], "rb").read() == onnx_bytes
    assert export.main(["--model_dir", run, "--format", "onnx", "--out", str(tmp_path), "--overwrite"]) == 0
    capsys.readouterr()
    model, _, radius = load_run(run)
    want = evaluate_pairs(model, find_pairs(f"{root}/test", 37), radius)[0][0]
    for fmt, path in paths.items():
        assert evaluate.main(["--exported", path, "--out", str(tmp_path / fmt)]) == 0
        with open(tmp_path / fmt / "report.csv") as f:
            got = next(row for row in csv.DictReader(f) if row["sequence"] == want["sequence"])
        assert abs(float(got["delta_psnr"]) - want["delta_psnr"]) <= 0.01, fmt
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []
    # vcar-enhance --exported FILE.onnx gives what the run gives
    from vcar_tf.cli import enhance

    rng = np.random.default_rng(3)
    src = tmp_path / "clip_48x32.yuv"
    src.write_bytes(rng.integers(0, 256, 48 * 32 * 3 // 2 * 3, dtype=np.uint8).tobytes())
    outs = {}
    for flag, value in (("--model_dir", run), ("--exported", paths["onnx"])):
        out = tmp_path / f"enhanced{flag}.yuv"
        assert enhance.main([str(src), str(out), flag, value, "--no_progress"]) == 0
        outs[flag] = np.frombuffer(out.read_bytes(), np.uint8).astype(int)
    assert outs["--model_dir"].shape == outs["--exported"].shape == (48 * 32 * 3 // 2 * 3,)
    assert np.abs(outs["--model_dir"] - outs["--exported"]).max() <= 1
    capsys.readouterr()
    for flags, message in ((["--format", "tflite", "--height", "0", "--width", "64"], "both be positive, or both 0"),
                           (["--format", "tflite", "--height", "100000", "--width", "100000"],
                            "more than the 4096000 pixels"),
                           (["--format", "onnx", "--quantization", "fp16"], "--format onnx takes --quantization fp32 or int8"),
                           (["--quantization", "int8"], "--format saved_model takes --quantization fp32, not int8"),
                           (["--format", "onnx", "--quantization", "int8", "--calibration_frames", "0"],
                            "--calibration_frames must be at least 1"),
                           (["--format", "tflite", "--onnx_deform", "native"], "--onnx_deform is for --format onnx"),
                           (["--format", "onnx", "--height", "64"], "--height and --width are for --format tflite"),
                           (["--format", "tflite", "--version", "2"], "--version is for --format saved_model")):
        with pytest.raises(SystemExit) as e:
            export.main(["--model_dir", run, "--out", str(tmp_path / "bad"), *flags])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and message in err and len(err.splitlines()) == 1
        assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit) as e:  # a fixed-size file on a sequence of another size
        evaluate.main(["--exported", export_small(export, run, tmp_path, capsys), "--out", str(tmp_path / "small")])
    err = capsys.readouterr().err
    errors = [line.split("\r")[-1] for line in err.splitlines() if line.split("\r")[-1].startswith("error: ")]
    assert e.value.code == 2 and len(errors) == 1, repr(err[-400:])
    assert "frames must be 1x1x64x64x1; got 1x1x240x416x1" in errors[0]
    assert "Traceback" not in err and not (tmp_path / "small").exists()


def export_small(export, run, tmp_path, capsys):
    assert export.main(["--model_dir", run, "--format", "tflite", "--height", "64", "--width", "64",
                        "--out", str(tmp_path)]) == 0
    return capsys.readouterr().out.split("exported ")[-1].strip()


def test_onnx_int8_export_of_a_preset_costs_at_most_0_05_db(sample_cache, tmp_path, monkeypatch, capsys):
    """vcar-export --preset stdf_r3_x265_qp37 --format onnx --onnx_deform native --quantization int8:
    Conv nodes in int8 (QDQ), DeformConv float, and on the sample's held-out sequence a ΔPSNR
    within 0.05 dB of the preset's own (vcar-evaluate --exported against --preset)."""
    import onnx

    from vcar_tf.cli import evaluate, export

    fused_op_or_skip()
    monkeypatch.setenv("VCAR_TF_CACHE", sample_cache[0])
    assert export.main(["--preset", "stdf_r3_x265_qp37", "--format", "onnx", "--onnx_deform", "native",
                        "--quantization", "int8", "--calibration_frames", "4", "--out", str(tmp_path)]) == 0
    path = capsys.readouterr().out.split("exported ")[-1].strip()
    assert os.path.basename(path) == "stdf_r3_x265_qp37_deformconv_int8.onnx"  # named after the preset
    graph = onnx.load(path).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") >= ops.count("Conv") > 0 and "DeformConv" in ops
    floats = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    assert all(n.input[1] in floats for n in graph.node if n.op_type == "DeformConv")  # float weights
    delta = {}
    for flag, value in (("--preset", "stdf_r3_x265_qp37"), ("--exported", path)):
        out = tmp_path / flag.strip("-")
        assert evaluate.main([flag, value, "--data", sample_cache[1], "--out", str(out)]) == 0  # the same frames
        with open(out / "report.csv") as f:
            delta[flag] = float(next(csv.DictReader(f))["delta_psnr"])
    assert delta["--preset"] > 0.1
    assert abs(delta["--exported"] - delta["--preset"]) <= 0.05, delta
