"""Whole-sequence inference with several frames per model call (StreamingEnhancer's `batch`,
`vcar-evaluate --batch`): the same frames, in order, as one frame per call."""

import numpy as np
import pytest

from vcar_tf import models
from vcar_tf.cli.evaluate import main as evaluate
from vcar_tf.data.codec import CodecSettings
from vcar_tf.data.sample import ensure_sample_dataset
from vcar_tf.inference.streaming import StreamingEnhancer
from vcar_tf.reporting import read_report


def _stream(enhancer, frames):
    out = [item for y in frames for item in enhancer.push(y)]
    return out + enhancer.flush()


@pytest.mark.parametrize("frames", [1, 2, 5, 11])
def test_batched_windows_give_the_frames_of_one_window_per_call(frames):
    model, radius = models.build("stifn_r3"), 3
    rng = np.random.default_rng(1)
    for v in model.weights:  # untrained, its last layer is zero: the output would be the input
        v.assign(rng.normal(0, 0.05, v.shape).astype(np.float32))
    video = list(np.random.default_rng(0).random((frames, 24, 40), dtype=np.float32))
    single = _stream(StreamingEnhancer(model, radius), video)
    batched_enhancer = StreamingEnhancer(model, radius, batch=4)
    assert batched_enhancer.batch == 4
    batched = _stream(batched_enhancer, video)
    assert [t for t, _ in batched] == [t for t, _ in single] == list(range(frames))
    assert len(batched_enhancer._frames) <= 2 * radius + 4  # what a batch's windows need, no more
    for (_, a), (_, b) in zip(single, batched):
        np.testing.assert_allclose(b, a, atol=1e-5)
    assert max(np.abs(a - v).max() for (_, a), v in zip(single, video)) > 1e-3  # the model did change them


def test_models_that_take_one_frame_per_call_ignore_batch():
    assert StreamingEnhancer(models.build("rfda"), 1, batch=4).batch == 1  # recurrent: its state goes frame to frame
    assert StreamingEnhancer(models.build("nl_convlstm"), 3, batch=4).batch == 1  # its window feature cache
    assert StreamingEnhancer(models.build("dncnn"), 0, batch=4, tile=16, overlap=4).batch == 1


def test_vcar_evaluate_batch_gives_the_report_of_one_frame_per_call(tmp_path):
    settings = CodecSettings(qp=37, deblock=True, sao=True)
    root = ensure_sample_dataset([settings], cache_dir=str(tmp_path / "cache"))
    reports = {}
    for batch in (1, 3):
        out = tmp_path / f"batch{batch}"
        # fp32 whatever the CPU (auto may pick bf16, whose oneDNN kernels may differ with the batch)
        assert evaluate(["--preset", "arcnn_x265_qp37", "--precision", "fp32", "--data", root, "--batch", str(batch),
                         "--out", str(out)]) == 0
        reports[batch] = read_report(str(out))[1]
    assert [r["sequence"] for r in reports[1]] == [r["sequence"] for r in reports[3]]
    for one, three in zip(reports[1], reports[3]):
        assert int(one["frames"]) == int(three["frames"]) > 0
        for key in ("psnr", "ssim", "psnr_enh", "ssim_enh", "delta_psnr"):
            assert float(three[key]) == pytest.approx(float(one[key]), abs=1e-4), key
    with pytest.raises(SystemExit) as refused:
        evaluate(["--preset", "arcnn_x265_qp37", "--data", root, "--batch", "0", "--out", str(tmp_path / "x")])
    assert refused.value.code == 2 and not (tmp_path / "x").exists()
