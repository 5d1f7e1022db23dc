"""vcar-import: the STDF-PyTorch release read safely from .pt or .safetensors, mapped exactly onto
stdf_r3 (checked against an independent NumPy reference of the release network)."""

import os
import pickle

import numpy as np
import pytest

from tests.conftest import REPO, run_cli, shared_file
from tests.stdf_reference import stdf_reference
from tests.torch_pickle import write_pt
from vcar_tf.errors import VcarError
from vcar_tf.models.stdf.pytorch import stdf_from_state_dict
from vcar_tf.weights.state_dict import read_state_dict

def one_error_line(r):
    """Exit 2 with exactly one `error:` line and no traceback (TF's start-up log lines aside)."""
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    return r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr


RELEASE = os.path.join(REPO, "..", "shared", "weights", "stdf-pytorch", "stdf_mfqev2_r3.safetensors")


@pytest.fixture(scope="module")
def release_state():
    if not os.path.exists(RELEASE):
        pytest.skip("../shared/weights is not present")
    return read_state_dict(RELEASE)


def test_release_keys_all_map_onto_stdf_r3(release_state):
    assert len(release_state) == 46
    name, model = stdf_from_state_dict(release_state)
    assert name == "stdf_r3" and model.count_params() == sum(v.size for v in release_state.values()) == 364510


def test_imported_release_equals_the_numpy_reference_on_real_frames(release_state):
    """Real frames, 44x60 (not a multiple of 8): our model pads by repetition to 48x64 and crops;
    the reference gets the same padded frames."""
    from vcar_tf.video import open_sequence

    _, model = stdf_from_state_dict(release_state)
    seq = open_sequence(shared_file("tabletennis-b"))
    frames = np.stack([seq.y(t)[100:144, 120:180] for t in range(7)]).astype(np.float32) / 255.0
    ours = np.asarray(model(frames[None, ..., None], training=False))[0, ..., 0]
    reference = stdf_reference(release_state, np.pad(frames, ((0, 0), (0, 4), (0, 4)), mode="edge"))[:44, :60]
    assert np.abs(reference - frames[3]).max() > 0.02  # the network does change the frame
    assert np.abs(ours - reference).max() <= 1e-5


def _delta_psnr(model, raw, compressed):
    from vcar_tf.inference.streaming import enhance_frames
    from vcar_tf.metrics import psnr_y

    enhanced = list(enhance_frames(model, (c / 255.0 for c in compressed), 3))
    return float(np.mean([psnr_y(r, e) - psnr_y(r, c) for r, e, c in zip(raw, enhanced, compressed)]))


def test_offset_layout_negative_control_swapped_dy_dx_is_clearly_worse(release_state, tmp_path):
    """The release on x265 QP37 (loop filters on) gains; the same weights with dy and dx swapped
    in the offset head lose against it."""
    from vcar_tf.data.codec import CodecSettings, encode
    from vcar_tf.video import decode_frames, open_sequence

    seq = open_sequence(shared_file("ciscovt2people"))
    src = [seq.frame(t) for t in range(seq.num_frames)]
    encode(iter(src), CodecSettings(qp=37, deblock=True, sao=True), str(tmp_path / "s.hevc"))
    raw = [s[0] for s in src]
    compressed = [d[0].astype(np.float32) for d in decode_frames(str(tmp_path / "s.hevc"))]
    _, model = stdf_from_state_dict(release_state)
    good = _delta_psnr(model, raw, compressed)

    swapped = dict(release_state)
    order = np.arange(swapped["ffnet.offset_mask.bias"].shape[0])
    order[:7 * 18] = order[:7 * 18].reshape(-1, 2)[:, ::-1].reshape(-1)
    swapped["ffnet.offset_mask.weight"] = release_state["ffnet.offset_mask.weight"][order]
    swapped["ffnet.offset_mask.bias"] = release_state["ffnet.offset_mask.bias"][order]
    _, bad_model = stdf_from_state_dict(swapped)
    bad = _delta_psnr(bad_model, raw, compressed)
    assert good > 0.2, good
    assert bad < good - 0.2, (good, bad)


def test_pt_checkpoint_reads_like_its_safetensors_conversion(release_state, tmp_path):
    path = str(tmp_path / "ckp_290000.pt")
    write_pt(path, release_state)  # DataParallel's module. prefix, wrapped in {"state_dict": ...}
    state = read_state_dict(path)
    assert sorted(state) == sorted(release_state)
    for key, value in release_state.items():
        np.testing.assert_array_equal(state[key], value)


class _RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pt_that_would_run_code_is_refused_before_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = str(tmp_path / "evil.pt")
    write_pt(path, {"w": np.zeros(3, np.float32)}, payload=pickle.dumps({"state_dict": _RunsAShellCommand(marker)},
                                                                        protocol=2))
    with pytest.raises(VcarError, match=r"refusing (posix|os|nt)\.system: a state_dict needs only tensors"):
        read_state_dict(path)
    assert not marker.exists()
    r = run_cli("-m", "vcar_tf.cli.import_weights", "stdf-pytorch", path, "--out", str(tmp_path / "run"))
    assert one_error_line(r) and "refusing" in r.stderr
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_storage_type_not_read_is_named_as_such(tmp_path):
    """A bfloat16 tensor is not read, and the error says that, not that the file may run code."""
    from tests.torch_pickle import strided_payload

    path = str(tmp_path / "bf16.pt")
    payload = strided_payload(3, (3,), 0, (1,)).replace(b"ctorch\nFloatStorage\n", b"ctorch\nBFloat16Storage\n")
    write_pt(path, {"w": np.zeros(3, np.float32)}, payload=payload)
    with pytest.raises(VcarError, match=r"BFloat16Storage tensors are not read \(only Float, Double, Half.*float32$"):
        read_state_dict(path)


@pytest.mark.parametrize("shape,offset,stride,message", [
    ((3,), -1, (1,), "bad size, stride or offset"),  # read the element before the storage
    ((50000, 50000), 0, (0, 0), "lies outside its storage"),  # one value repeated into 10 GB
    ((2,), 2, (1,), "lies outside its storage"),
    ((2,), 1.5, (1,), "bad size, stride or offset"),
])
def test_a_hostile_tensor_view_is_refused_before_any_read(tmp_path, shape, offset, stride, message):
    from tests.torch_pickle import strided_payload

    path = str(tmp_path / "view.pt")
    write_pt(path, {"w": np.arange(3, dtype=np.float32)}, wrap=False, prefix="",
             payload=strided_payload(3, shape, offset, stride))
    with pytest.raises(VcarError, match=message):
        read_state_dict(path)


def test_a_file_cannot_change_the_storage_types_later_loads_use(tmp_path):
    """pickle's BUILD on torch.FloatStorage (its dict or its slots) would have turned every later
    file's float32 storages into float16 ones; a deflated storage (a zip bomb) is refused."""
    import zipfile

    good = str(tmp_path / "good.pt")
    write_pt(good, {"w": np.arange(3, dtype=np.float32)}, wrap=False, prefix="")
    for build in (b"}Vdtype\nVf2\nsb.", b"(N}Vdtype\nVf2\nstb."):
        bad = str(tmp_path / "bad.pt")
        write_pt(bad, {"w": np.zeros(3, np.float32)}, payload=b"ctorch\nFloatStorage\n" + build)
        with pytest.raises(VcarError, match="corrupt checkpoint"):
            read_state_dict(bad)
        np.testing.assert_array_equal(read_state_dict(good)["w"], [0, 1, 2])
    bomb = str(tmp_path / "bomb.pt")
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), zipfile.ZIP_DEFLATED if "/data/" in info.filename else 0)
    with pytest.raises(VcarError, match="is compressed, which torch.save never writes"):
        read_state_dict(bomb)


def test_missing_unexpected_and_wrongly_shaped_tensors_are_named(release_state):
    state = dict(release_state)
    del state["qenet.hid_conv.4.bias"]
    state["ffnet.extra.weight"] = np.zeros((3,), np.float32)
    state["qenet.out_conv.weight"] = np.zeros((1, 48, 5, 5), np.float32)
    with pytest.raises(VcarError) as e:
        stdf_from_state_dict(state)
    message = str(e.value)
    assert "missing: qe_4/bias;" in message and "unexpected: ffnet.extra.weight" in message
    assert "wrong shape: qenet.out_conv.weight (1, 48, 5, 5) (expected (1, 48, 3, 3))" in message
    with pytest.raises(VcarError, match="not an STDF-PyTorch state_dict"):
        stdf_from_state_dict({"conv.weight": np.zeros((1, 1, 3, 3), np.float32)})
    odd = dict(release_state)  # index 3 is a ReLU's: it held no weights and must not land on qe_3 (conv 2's)
    odd["qenet.hid_conv.3.weight"] = odd["qenet.hid_conv.2.weight"] + 1
    with pytest.raises(VcarError, match="unexpected: qenet.hid_conv.3.weight"):
        stdf_from_state_dict(odd)


def test_vcar_import_writes_a_run_and_a_weights_file_that_load(release_state, tmp_path):
    from vcar_tf.cli.import_weights import main
    from vcar_tf.models import build
    from vcar_tf.train.run import load_run

    pt = str(tmp_path / "ckp_290000.pt")
    write_pt(pt, release_state)
    assert main(["stdf-pytorch", pt, "--out", str(tmp_path / "run")]) == 0
    model, cfg, radius = load_run(str(tmp_path / "run"))
    assert (cfg.model, radius) == ("stdf_r3", 3)
    assert main(["stdf-pytorch", RELEASE, "--out", str(tmp_path / "w.weights.h5")]) == 0
    other = build("stdf_r3")
    other.load_weights(str(tmp_path / "w.weights.h5"))
    x = np.random.default_rng(0).uniform(size=(1, 7, 24, 40, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(other(x)), atol=1e-6)
    _, direct = stdf_from_state_dict(release_state)
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(direct(x)), atol=1e-6)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_vcar_import_bad_input_is_one_line(tmp_path):
    r = run_cli("-m", "vcar_tf.cli.import_weights", "stdf-pytorch", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o"))
    assert one_error_line(r) and "checkpoint not found" in r.stderr, r.stderr
    r = run_cli("-m", "vcar_tf.cli.import_weights", "other-release", str(tmp_path / "x.pt"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "invalid choice: 'other-release'" in r.stderr
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    r = run_cli("-m", "vcar_tf.cli.import_weights", "stdf-pytorch", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "o"))
    assert one_error_line(r) and "not a PyTorch zip checkpoint" in r.stderr
    assert not (tmp_path / "o").exists()


def test_imported_weights_are_marked_and_never_become_a_preset(release_state, tmp_path, capsys):
    """vcar-import's run says where its weights come from (imported.json); make_preset refuses it
    and any run started from it (--init_from), since released weights are never shipped. --out is
    checked before the checkpoint is read: inside the package, an existing file, a full folder."""
    import json
    import shutil

    from vcar_tf.cli.import_weights import main

    pt = str(tmp_path / "ckp_290000.pt")
    write_pt(pt, release_state)
    assert main(["stdf-pytorch", pt, "--out", str(tmp_path / "release")]) == 0
    record = json.loads((tmp_path / "release" / "imported.json").read_text())
    assert record["source"] == "stdf-pytorch" and record["checkpoint"] == "ckp_290000.pt" and len(record["sha256"]) == 64
    tuned = tmp_path / "tuned"
    shutil.copytree(os.path.join(REPO, "tests", "legacy", "run_arcnn"), tuned)
    config = json.loads((tuned / "config.json").read_text())
    (tuned / "config.json").write_text(json.dumps({**config, "init_from": str(tmp_path / "release")}))
    for run in (tmp_path / "release", tuned):
        r = run_cli("scripts/make_preset.py", str(run), "--name", "x", "--test", str(tmp_path), "--out",
                    str(tmp_path / "presets"))
        assert one_error_line(r) and "holds released weights" in r.stderr and not (tmp_path / "presets").exists()

    (tmp_path / "w.weights.h5").write_bytes(b"mine")
    for out, message in ((os.path.join(REPO, "vcar_tf", "presets", "x", "model.weights.h5"), "inside the vcar_tf package"),
                         (str(tmp_path / "w.weights.h5"), "exists; pass --overwrite"),
                         (str(tmp_path / "release"), "exists and is not an empty folder")):
        with pytest.raises(SystemExit) as e:
            main(["stdf-pytorch", pt, "--out", out])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert (tmp_path / "w.weights.h5").read_bytes() == b"mine"
    assert not os.path.exists(os.path.join(REPO, "vcar_tf", "presets", "x"))
