"""tf.distribute strategies by name."""

import os

import tensorflow as tf

from vcar_tf.errors import VcarError

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")


def make_strategy(name):
    """auto: MultiWorkerMirrored when TF_CONFIG is set, Mirrored over several GPUs, else one device.
    mirrored: all local GPUs, or the logical CPU devices when there is no GPU."""
    if name not in STRATEGIES:
        raise VcarError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "multi_worker" or (name == "auto" and os.environ.get("TF_CONFIG")):
        # must come before anything initialises the TF runtime (collectives are set up at start)
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
