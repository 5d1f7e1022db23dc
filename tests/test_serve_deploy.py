"""The deployment files in export/ are well formed and name the ports and paths that vcar-export
and vcar-serve use (TF Serving's model config via the official ModelServerConfig proto, the
manifests via PyYAML where installed)."""

import os
import re

import pytest

from tests.conftest import REPO

EXPORT = os.path.join(REPO, "export")


def read(name):
    with open(os.path.join(EXPORT, name)) as f:
        return f.read()


@pytest.fixture(scope="module")
def served_names():
    pytest.importorskip("tensorflow_serving.config.model_server_config_pb2")
    from vcar_tf.serving.config import parse_model_config

    models = parse_model_config(read("models.config"), "export/models.config")
    for model in models:
        # vcar-export --out DIR writes DIR/NAME/VERSION; the containers mount DIR at /models
        assert model.base_path == f"/models/{model.name}"
    return [m.name for m in models]


def test_models_config_names_registered_models(served_names):
    from vcar_tf.models import names

    assert served_names and set(served_names) <= set(names())


def test_dockerfile_runs_tf_serving_with_the_config_on_vcar_serves_ports():
    from vcar_tf.cli.serve import parse_args

    text = read("Dockerfile")
    assert re.search(r"^FROM tensorflow/serving:2\.21\.\d+$", text, re.M)
    assert "COPY models.config /config/models.config" in text
    assert "--model_config_file=/config/models.config" in text
    defaults = parse_args(["--model_base_path", "x"])
    assert re.search(rf"^EXPOSE {defaults.port} {defaults.rest_api_port}$", text, re.M)


def yaml_documents(name):
    import yaml

    return [d for d in yaml.safe_load_all(read(name)) if d]


def test_compose_mounts_the_export_folder_and_binds_loopback():
    [service] = yaml_documents("compose.yaml")[0]["services"].values()
    assert service["build"] == "."
    assert set(service["ports"]) == {"127.0.0.1:8500:8500", "127.0.0.1:8501:8501"}
    assert service["volumes"] == ["../serving:/models:ro"]
    assert service["deploy"]["resources"]["limits"]["memory"]


def test_kubernetes_deployment_and_service(served_names):
    documents = {d["kind"]: d for d in yaml_documents("kubernetes.yaml")}
    assert set(documents) == {"Deployment", "Service"}
    [container] = documents["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    probe = container["readinessProbe"]["httpGet"]
    assert probe["port"] == 8501 and probe["path"] == f"/v1/models/{served_names[0]}"  # TF Serving's status
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["memory"]
    assert container["volumeMounts"][0]["mountPath"] == "/models"
    assert "--model_config_file=/config/models.config" in container["args"]
    service = documents["Service"]["spec"]
    assert service["selector"] == documents["Deployment"]["spec"]["selector"]["matchLabels"]
    assert {p["port"] for p in service["ports"]} == {8500, 8501}


def test_vcar_serve_reads_the_same_config(tmp_path):
    """vcar-serve --model_config_file takes TF Serving's format; what it does not serve is one line."""
    pytest.importorskip("tensorflow_serving.config.model_server_config_pb2")
    from vcar_tf.errors import VcarError
    from vcar_tf.serving.config import parse_model_config

    [model] = parse_model_config('model_config_list { config { name: "a" base_path: "/m/a" '
                                 'version_labels { key: "stable" value: 3 } } }')
    assert (model.name, model.base_path, model.version_labels) == ("a", "/m/a", {"stable": 3})
    for text, message in (("model_config_list { config { name: ", "model config"),
                          ("model_config_list { }", "no model_config_list"),
                          ('model_config_list { config { name: "a" base_path: "/a" model_version_policy '
                           '{ all { } } } }', "latest version only")):
        with pytest.raises(VcarError, match=message) as info:
            parse_model_config(text)
        assert "\n" not in str(info.value)
