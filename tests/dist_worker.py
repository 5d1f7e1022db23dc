"""Helper process for the distribution tests: trains a few steps and saves its final weights."""

import json
import os
import sys

import numpy as np

mode, data, model_dir, out = sys.argv[1:5]
import tensorflow as tf  # noqa: E402

if mode in ("one_device", "mirrored"):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from vcar_tf.train.config import TrainConfig  # noqa: E402
from vcar_tf.train.trainer import Trainer  # noqa: E402

cfg = TrainConfig(model="arcnn", data=data, patch=16, batch=4, steps=3, lr=1e-3, model_dir=model_dir,
                  checkpoint_every=100, strategy=mode)
trainer = Trainer(cfg)
trainer.run()
np.savez(out, *[v.numpy() for v in trainer.model.weights])
with open(out + ".json", "w") as f:
    json.dump({"losses": trainer.losses, "replicas": trainer.strategy.num_replicas_in_sync,
               "chief": trainer.is_chief, "pid": os.getpid()}, f)
