"""End to end, as the README's serving section runs it: `vcar-export --preset stdf_r3_x265_qp37`, that
SavedModel served by `vcar-serve`, queried over REST (`requests`) and gRPC (tensorflow-serving-api's
stubs); both answers equal `saved_model_cli run` on the same frames."""

import numpy as np
import pytest

from tests.test_serve import TIMEOUT, saved_model_cli_run, serving

requests = pytest.importorskip("requests")
pytest.importorskip("tensorflow_serving.apis.predict_pb2")

PRESET = "stdf_r3_x265_qp37"
NAME = PRESET  # vcar-export --preset names the model after the preset


def test_a_preset_exported_and_served_answers_as_saved_model_cli(tmp_path):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from vcar_tf.cli.export import main as export

    base = tmp_path / "serving"
    assert export(["--preset", PRESET, "--format", "saved_model", "--out", str(base)]) == 0
    version, = [p for p in (base / NAME).iterdir() if p.name.isdigit()]
    frames = np.random.default_rng(0).integers(0, 256, (7, 37, 45), dtype=np.uint8)  # 2R+1 = 7, odd size
    expected = saved_model_cli_run(str(version), "serving_default", {"frames": frames}, str(tmp_path))["enhanced"]
    assert np.abs(expected.astype(int) - frames[3]).max() > 0  # the preset changes the centre frame
    with serving(NAME, base / NAME) as (rest, grpc_address, _):
        r = requests.post(f"{rest}/v1/models/{NAME}:predict", json={"inputs": frames.tolist()}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(np.array(r.json()["outputs"], np.uint8), expected)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = NAME
        request.inputs["frames"].CopyFrom(tf.make_tensor_proto(frames))
        with grpc.insecure_channel(grpc_address) as channel:
            answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=TIMEOUT)
        np.testing.assert_array_equal(tf.make_ndarray(answer.outputs["enhanced"]), expected)
