"""The typed training config; train_main.py's absl flags mirror it one to one."""

import dataclasses
import math
from typing import Optional

from vcar_tf.errors import VcarError

MAX_STEPS = 2**31 - 1  # far beyond any run; a larger --steps overflowed the schedule's tensors
CHECKPOINTS = ("latest", "best")  # which checkpoint of a run to load: its last, or its best on val


@dataclasses.dataclass
class TrainConfig:
    model: str = "stifn_r3"
    data: Optional[str] = None  # None: the embedded sample dataset
    qp: int = 37
    codec: str = "x265"  # of the embedded sample dataset (data None)
    codec_folder: Optional[str] = None  # the compressed folder of a --data root (None: its only one at qp)
    radius: Optional[int] = None  # None: the model's own
    clip_length: Optional[int] = None  # recurrent models: frames per training clip (None: the model's)
    patch: int = 48
    batch: int = 8  # global, over all replicas
    steps: int = 300
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # cosine: warm-up, then cosine decay to lr/10 at `steps`; constant
    warmup_steps: int = 20
    lr_milestones: tuple = ()  # steps at which the learning rate halves (replaces lr_schedule)
    loss: str = "l2"  # or charbonnier (STDF/RFDA's); see docs/models.md for why L2 is the default
    mixed_precision: bool = False
    strategy: str = "auto"
    model_dir: Optional[str] = None  # None: runs/<model name>
    eval_every: int = 0  # 0: only at the end
    checkpoint_every: int = 100
    export_dir: Optional[str] = None  # None: <model_dir>/serving
    export: bool = True  # write a TF Serving SavedModel at the end of training
    seed: int = 0
    init_from: Optional[str] = None  # a run whose weights start this one (matched by layer/variable path)
    init_lr: Optional[float] = None  # constant learning rate of the weights taken from init_from
    centre_noise: float = 0.0  # window models: noise std on half the training windows' centre frames

    def validate(self, min_steps=1):
        """Raise VcarError for a setting that has no meaning (the flag named as on the command line).
        A run read back may have 0 steps (vcar-import writes untrained runs): min_steps=0."""
        if self.steps < min_steps:
            raise VcarError(f"--steps must be at least {min_steps}, not {self.steps}")
        if self.steps > MAX_STEPS:
            raise VcarError(f"--steps must be at most {MAX_STEPS}, not {self.steps}")
        for name, value in {"batch": self.batch, "patch": self.patch, "checkpoint_every": self.checkpoint_every}.items():
            if value < 1:
                raise VcarError(f"--{name} must be at least 1, not {value}")
        for name in ("eval_every", "warmup_steps"):
            if getattr(self, name) < 0:
                raise VcarError(f"--{name} must be 0 or more, not {getattr(self, name)}")
        if self.radius is not None and self.radius < 0:
            raise VcarError(f"--radius must be 0 or more, not {self.radius}")
        if self.clip_length is not None and self.clip_length < 1:
            raise VcarError(f"--clip_length must be at least 1, not {self.clip_length}")
        if not 0 <= self.qp <= 51:
            raise VcarError(f"--qp must be in 0..51, not {self.qp}")
        for name in ("lr", "init_lr"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise VcarError(f"--{name} must be a positive number, not {value}")
        if not 0 <= self.centre_noise < 1:
            raise VcarError(f"--centre_noise must be in [0, 1), not {self.centre_noise}")
        if self.init_lr is not None and not self.init_from:
            raise VcarError("--init_lr needs --init_from")
        if any(m < 1 for m in self.lr_milestones):
            raise VcarError(f"--lr_milestones must be steps of 1 or more, not {list(self.lr_milestones)}")
        return self
