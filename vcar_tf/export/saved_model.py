"""SavedModel export for TF Serving (stock ops only), with the signatures of vcar_tf.export.signatures.

export_saved_model(model, radius, base_dir) writes base_dir/VERSION/, TF Serving's layout; VERSION
defaults to one more than the largest there. The command is vcar-export (vcar_tf/cli/export.py).
"""

import os
import shutil
import tempfile

from vcar_tf.errors import VcarError
from vcar_tf.export.signatures import endpoints
from vcar_tf.fileutil import hold_folder_lock, sweep_temps
from vcar_tf.ops.deform_conv import composite_only


def next_version(base):
    versions = [int(d) for d in os.listdir(base) if d.isdigit()] if os.path.isdir(base) else []
    return max(versions, default=0) + 1


def export_saved_model(model, radius, base_dir, version=None):
    """Write `model` to base_dir/VERSION atomically; returns the version folder. A TF Serving
    base is written by one export at a time (its .lock); what killed exports left is swept."""
    with hold_folder_lock(base_dir, "vcar-export"):
        sweep_temps(base_dir, (".tmp-export-*",))
        return _export_saved_model(model, radius, base_dir, version)


def _export_saved_model(model, radius, base_dir, version):
    import keras

    version = next_version(base_dir) if version is None else version
    target = os.path.join(base_dir, str(version))
    if os.path.exists(target):
        raise VcarError(f"{target} already exists")
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
