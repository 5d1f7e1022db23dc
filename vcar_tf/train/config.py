"""The typed training config; train_main.py's absl flags mirror it one to one."""

import dataclasses
from typing import Optional


@dataclasses.dataclass
class TrainConfig:
    model: str = "stifn_r3"
    data: Optional[str] = None  # None: the embedded sample dataset
    qp: int = 37
    codec: str = "x265"
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
