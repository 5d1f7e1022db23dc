"""SavedModel export for TF Serving (stock ops only), with the signatures of vcar_tf.export.signatures.

export_saved_model(model, radius, base_dir) writes base_dir/VERSION/, TF Serving's layout; VERSION
defaults to one more than the largest there. The command is vcar-export (vcar_tf/cli/export.py).
"""

import contextlib
import os
import shutil
import tempfile

from vcar_tf.errors import VcarError
from vcar_tf.export.signatures import endpoints
from vcar_tf.fileutil import LOCK_NAME, hold_folder_lock, sweep_temps
from vcar_tf.ops.deform_conv import composite_only


def existing_versions(base):
    """The version numbers of base's folders, named as TF Serving reads them (ASCII digits; 0004 is 4)."""
    return [int(d) for d in os.listdir(base) if d.isascii() and d.isdigit()] if os.path.isdir(base) else []


def next_version(base):
    return max(existing_versions(base), default=0) + 1


def export_saved_model(model, radius, base_dir, version=None):
    """Write `model` to base_dir/VERSION atomically; returns the version folder. A TF Serving
    base is written by one export at a time (its .lock); what killed exports left is swept."""
    new_base = not os.path.exists(base_dir)
    try:
        with hold_folder_lock(base_dir, "vcar-export"):
            sweep_temps(base_dir, (".tmp-export-*",))
            return _export_saved_model(model, radius, base_dir, version)
    except BaseException:
        if new_base:  # a base folder made for this export, holding only its lock: not left behind
            with contextlib.suppress(OSError):
                os.remove(os.path.join(base_dir, LOCK_NAME))
                os.rmdir(base_dir)
        raise


def _export_saved_model(model, radius, base_dir, version):
    import keras

    version = next_version(base_dir) if version is None else version
    target = os.path.join(base_dir, str(version))
    if os.path.exists(target) or version in existing_versions(base_dir):
        raise VcarError(f"version {version} already exists in {base_dir}")
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=base_dir)
    try:
        with composite_only():  # stock ops only: no custom op in a served graph
            archive = keras.export.ExportArchive()
            archive.track(model)
            for endpoint, fn in endpoints(model, radius).items():
                archive.add_endpoint(endpoint, fn)
            archive.write_out(os.path.join(tmp, "model"), verbose=False)
        os.replace(os.path.join(tmp, "model"), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
