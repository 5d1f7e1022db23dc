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
    patch: int = 48
    batch: int = 8  # global, over all replicas
    steps: int = 300
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # cosine: warm-up, then cosine decay to lr/10 at `steps`; constant
    warmup_steps: int = 20
    lr_milestones: tuple = ()  # steps at which the learning rate halves (replaces lr_schedule)
    loss: str = "charbonnier"
    mixed_precision: bool = False
    strategy: str = "auto"
    model_dir: Optional[str] = None  # None: runs/<model name>
    eval_every: int = 0  # 0: only at the end
    checkpoint_every: int = 100
    export_dir: Optional[str] = None  # None: <model_dir>/serving
    export: bool = True  # write a TF Serving SavedModel at the end of training
    seed: int = 0
