"""The models a server serves: one from --model_name/--model_base_path, or TF Serving's model
config file (text format of tensorflow.serving.ModelServerConfig, parsed with the official proto)."""

import os

from google.protobuf import text_format

from vcar_tf.errors import VcarError
from vcar_tf.serving.model_store import ModelConfig


def parse_model_config(text, where="model config"):
    """[ModelConfig] of a ModelServerConfig in text format; VcarError for what vcar-serve does not serve."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise VcarError(f"{where}: {e}") from None
    if not config.HasField("model_config_list") or not config.model_config_list.config:
        raise VcarError(f"{where}: no model_config_list with a config {{ name: ... base_path: ... }}")
    models = []
    for model in config.model_config_list.config:
        if not model.name or not model.base_path:
            raise VcarError(f"{where}: every config needs a name and a base_path")
        if model.model_platform not in ("", "tensorflow"):
            raise VcarError(f"{where}: {model.name}: model_platform {model.model_platform!r}; only tensorflow is served")
        policy = model.model_version_policy.WhichOneof("policy_choice")
        if policy not in (None, "latest") or (policy == "latest" and model.model_version_policy.latest.num_versions > 1):
            raise VcarError(f"{where}: {model.name}: vcar-serve serves the latest version only "
                            f"(model_version_policy {{ latest {{ num_versions: 1 }} }})")
        models.append(ModelConfig(model.name, model.base_path, dict(model.version_labels)))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise VcarError(f"{where}: a model name appears twice")
    return models


def read_model_config(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise VcarError(f"{path}: not a text file (a model config is ModelServerConfig in text format)") from None
    return parse_model_config(text, path)


def models_from_flags(model_name, model_base_path, model_config_file):
    if model_config_file:
        if model_base_path:
            raise VcarError("give --model_config_file or --model_base_path, not both")
        return read_model_config(model_config_file)
    if not model_base_path:
        raise VcarError("give --model_base_path (with --model_name) or --model_config_file")
    if not os.path.isdir(model_base_path):
        raise VcarError(f"--model_base_path {model_base_path} is not a folder (vcar-export --out DIR writes DIR/NAME/)")
    return [ModelConfig(model_name, os.path.abspath(model_base_path))]
