"""The versions of each served model, as TF Serving handles a base path (its latest-version policy).

BASE/VERSION/saved_model.pb is a version; VERSION is ASCII digits (0007 is 7). The newest version that loads is
served; poll() picks up a new one. A folder with another name (vcar-export's `.tmp-export-*`) or
without saved_model.pb yet is half-written and ignored. A version that fails to load is reported
(status END with the error) and leaves the previous one serving; it is retried when any of its files
changes. A replaced version stops taking requests at once and is unloaded when its in-flight
requests (and open streams) end.
"""

import contextlib
import os
import re
import sys
import threading
from dataclasses import dataclass, field

from vcar_tf.export.names import HIDDEN, SERVING_DEFAULT
from vcar_tf.serving.status import ServingError, not_found

SAVED_MODEL_FILE = "saved_model.pb"


@dataclass
class ModelConfig:
    """One served model: TF Serving's ModelConfig fields that vcar-serve uses."""
    name: str
    base_path: str
    version_labels: dict = field(default_factory=dict)


def ready_versions(base_path):
    """[(version, folder)] of the complete versions under base_path, newest first; a folder is named
    by ASCII digits (`0007` is version 7; of two folders for one version, the first by name)."""
    try:
        names = sorted(os.listdir(base_path))
    except OSError:
        return []
    folders = {}
    for n in names:
        if re.fullmatch(r"[0-9]+", n) and os.path.isfile(os.path.join(base_path, n, SAVED_MODEL_FILE)):
            folders.setdefault(int(n), os.path.join(base_path, n))
    return sorted(folders.items(), reverse=True)


def folder_stamp(path):
    """What changes when any file of a version folder is written (a failed version is retried then):
    the newest modification time and the total size of its files."""
    newest = total = 0
    for folder, _, files in os.walk(path):
        for f in files:
            try:
                st = os.stat(os.path.join(folder, f))
            except OSError:
                continue
            newest, total = max(newest, st.st_mtime_ns), total + st.st_size
    return newest, total


def load_saved_model(path):
    """(signatures {name: Signature}, signature_defs proto map) of a SavedModel folder."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    from vcar_tf.serving.signature import Signature

    loaded = tf.saved_model.load(path)
    signatures = {name: Signature(name, fn) for name, fn in loaded.signatures.items()}
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, SAVED_MODEL_FILE), "rb") as f:
        proto.ParseFromString(f.read())
    meta_graph = next((m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags), proto.meta_graphs[0])
    return loaded, signatures, meta_graph.signature_def


class LoadedVersion:
    """One loaded version; `users` counts in-flight requests and open streams."""

    def __init__(self, name, version, path, loader):
        self.name, self.version, self.path = name, version, path
        self._module, self.signatures, self.signature_defs = loader(path)
        self.users = 0
        self.retired = False

    @property
    def recurrent(self):
        default = self.signatures.get(SERVING_DEFAULT)
        return default is not None and HIDDEN in default.inputs

    def signature(self, name):
        name = name or SERVING_DEFAULT
        if name not in self.signatures:
            # TF Serving's message and code for an unknown signature
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found '
                                                      f'(this model has: {", ".join(sorted(self.signatures))})')
        return self.signatures[name]

    def unload(self):
        self._module = self.signatures = None


class ModelStore:
    def __init__(self, models, loader=load_saved_model, log=None):
        self.models = {m.name: m for m in models}
        self._loader = loader
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._lock = threading.Lock()
        self._served = {}   # name -> LoadedVersion taking requests
        self._retiring = []  # replaced versions with users left
        self._failed = {m.name: {} for m in models}  # name -> {version: (stamp, message)}

    def unserved_labels(self):
        """[(model, label, version)] of version labels naming a version that is not served: TF Serving
        refuses them at start (unless --allow_version_labels_for_unavailable_models)."""
        with self._lock:
            served = {name: loaded.version for name, loaded in self._served.items()}
        return [(name, label, version) for name, config in self.models.items()
                for label, version in config.version_labels.items() if served.get(name) != version]

    def poll(self):
        """Load what changed under every base path; returns the names whose served version changed."""
        changed = []
        for config in self.models.values():
            if self._poll_model(config):
                changed.append(config.name)
        return changed

    def _poll_model(self, config):
        current = self._served.get(config.name)
        for version, path in ready_versions(config.base_path):
            if current is not None and version == current.version:
                return False
            stamp = folder_stamp(path)
            failed = self._failed[config.name].get(version)
            if failed and failed[0] == stamp:
                continue  # failed before and unchanged: the next older version serves
            try:
                loaded = LoadedVersion(config.name, version, path, self._loader)
            except Exception as e:  # noqa: BLE001  (any load failure leaves the previous version serving)
                message = " ".join(f"{type(e).__name__}: {e}".split())[:500]
                with self._lock:  # status() reads _failed under the lock
                    self._failed[config.name][version] = (stamp, message)
                self._log(f"vcar-serve: {config.name} version {version} failed to load, "
                          f"{'version ' + str(current.version) if current else 'nothing'} still served: {message}")
                continue
            with self._lock:
                self._failed[config.name].pop(version, None)
                old = self._served.get(config.name)
                self._served[config.name] = loaded
                if old is not None:
                    old.retired = True
                    self._retiring.append(old)
                    self._unload_idle()
            self._log(f"vcar-serve: serving {config.name} version {version}")
            return True
        return False

    def _unload_idle(self):
        for old in [v for v in self._retiring if v.users == 0]:
            self._retiring.remove(old)
            old.unload()
            self._log(f"vcar-serve: unloaded {old.name} version {old.version}")

    def pin(self, name, version=None, label=None):
        """The version a request asks for, counted as in use until unpin()."""
        with self._lock:
            config = self.models.get(name)
            served = self._served.get(name)
            if label is not None:
                if config is None or label not in config.version_labels:
                    raise not_found(f"Unrecognized servable version label: {label} (model {name})")
                version = config.version_labels[label]
            if served is None or (version is not None and version != served.version):
                what = f"Latest({name})" if version is None else f"Specific({name}, {version})"
                raise not_found(f"Servable not found for request: {what}")
            served.users += 1
            return served

    def unpin(self, loaded):
        with self._lock:
            loaded.users -= 1
            if loaded.retired:
                self._unload_idle()

    @contextlib.contextmanager
    def use(self, name, version=None, label=None):
        loaded = self.pin(name, version, label)
        try:
            yield loaded
        finally:
            self.unpin(loaded)

    def status(self, name, version=None):
        """[(version, state, error code, message)] as TF Serving's GetModelStatus lists them."""
        if name not in self.models:
            raise not_found(f"Could not find any versions of model {name}")
        with self._lock:
            served = self._served.get(name)
            rows = [(served.version, "AVAILABLE", "OK", "")] if served else []
            rows += [(v, "END", "UNKNOWN", message) for v, (_, message) in self._failed[name].items()]
        if not rows:
            raise not_found(f"Could not find any versions of model {name}")  # TF Serving's answer
        if version is not None:
            rows = [r for r in rows if r[0] == version]
            if not rows:
                raise not_found(f"Could not find version {version} of model {name}")
        return sorted(rows, reverse=True)

    def served(self, name):
        with self._lock:
            return self._served.get(name)
