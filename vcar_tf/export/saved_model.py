"""SavedModel export for TF Serving (stock ops only), with the signatures of vcar_tf.export.signatures.

export_saved_model(model, radius, base_dir) writes base_dir/VERSION/, TF Serving's layout; VERSION
defaults to one more than the largest there. The command is vcar-export (vcar_tf/cli/export.py).
"""

import os
import shutil
import tempfile

from vcar_tf.errors import VcarError
from vcar_tf.export.signatures import endpoints
from vcar_tf.fileutil import ensure_writable_dir
from vcar_tf.ops.deform_conv import composite_only


def next_version(base):
    versions = [int(d) for d in os.listdir(base) if d.isdigit()] if os.path.isdir(base) else []
    return max(versions, default=0) + 1


def export_saved_model(model, radius, base_dir, version=None):
    """Write `model` to base_dir/VERSION atomically; returns the version folder."""
    import keras

    ensure_writable_dir(base_dir)
    version = version or next_version(base_dir)
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
