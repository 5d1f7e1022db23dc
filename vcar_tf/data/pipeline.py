"""tf.data input pipelines over memory-mapped YUV datasets.

Window mode yields ((2R+1, P, P, 1) compressed window, (P, P, 1) raw centre) with neighbour
indices clipped at the sequence ends; clip mode yields ((L, P, P, 1) compressed clip,
(L, P, P, 1) raw clip) for recurrent models. Random crop, flip and 90-degree rotation are drawn
once per sample and applied identically to input and target. With centre_noise, half of the
windows (drawn per sample) get Gaussian noise of that standard deviation on their centre frame
only, so that a multi-frame model gains from its neighbours in training (an experiment). Sample k
of the stream depends only on (seed, k), so the stream is deterministic and resumes exactly from
any sample index.
"""

import atexit
import dataclasses
import threading
import time

import numpy as np

from vcar_tf.errors import VcarError


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    radius: int = 3
    patch: int = 96
    batch: int = 16
    mode: str = "window"  # "window" or "clip"
    clip_length: int = 15
    augment: bool = True
    seed: int = 0
    centre_noise: float = 0.0  # window mode: std of the noise on half the windows' centre frames

    def __post_init__(self):
        if self.mode not in ("window", "clip"):
            raise VcarError(f"unknown pipeline mode {self.mode!r}; use 'window' or 'clip'")
        if self.radius < 0 or self.patch < 1 or self.batch < 1 or self.clip_length < 1:
            raise VcarError("radius must be >= 0 and patch, batch, clip_length >= 1")
        if not 0 <= self.centre_noise < 1:
            raise VcarError(f"centre_noise must be in [0, 1), not {self.centre_noise}")
        if self.centre_noise and self.mode != "window":
            raise VcarError("centre_noise goes with window models (window mode), not a recurrent model's clips")


# tf.data threads still calling into Python while the interpreter finalises deadlock the exit of
# any process that leaves an iterator alive. At exit, loads return blanks at once (nobody reads
# them any more) so the buffers fill and those threads go idle before finalisation.
_exiting = threading.Event()


@atexit.register
def _stop_loading_at_exit():
    _exiting.set()
    time.sleep(0.2)


def window_indices(t, num_frames, radius):
    """Frame indices of the window around t, clipped to the sequence: clip(t-R..t+R, 0, T-1)."""
    return np.clip(np.arange(t - radius, t + radius + 1), 0, num_frames - 1)


def augment_planes(planes, rot90, flip):
    """Rotate by rot90 quarter turns and optionally flip left-right the last two axes."""
    out = np.rot90(planes, k=rot90, axes=(-2, -1))
    return out[..., ::-1] if flip else out


class PatchSampler:
    """Maps a global sample index to one training sample, from memory-mapped sequences."""

    def __init__(self, pairs, config):
        self.config = config
        self.sequences = [p.open() for p in pairs]
        self.names = [p.name for p in pairs]
        for name, (raw, _) in zip(self.names, self.sequences):
            if min(raw.height, raw.width) < config.patch:
                raise VcarError(f"{name}: {raw.width}x{raw.height} is smaller than patch {config.patch}")
        items = []
        for s, (raw, _) in enumerate(self.sequences):
            if config.mode == "window":
                items += [(s, t) for t in range(raw.num_frames)]
            elif raw.num_frames >= config.clip_length:
                items += [(s, t) for t in range(raw.num_frames - config.clip_length + 1)]
        if not items:
            raise VcarError(f"no sequence is long enough for clips of {config.clip_length} frames")
        self.items = np.array(items, dtype=np.int64)
        self._perms = {}

    def __len__(self):
        return len(self.items)

    def _item(self, index):
        epoch, pos = divmod(int(index), len(self.items))
        perm = self._perms.get(epoch)  # read once: another loader thread may start the next epoch meanwhile
        if perm is None:
            perm = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.items))
            self._perms = {epoch: perm}
        return self.items[perm[pos]]

    def describe(self, index):
        """(sequence, frame or clip start, y0, x0, rot90, flip) drawn for sample `index`."""
        s, t = self._item(index)
        raw, _ = self.sequences[s]
        rng = np.random.default_rng([self.config.seed, 1 << 32, int(index)])
        p = self.config.patch
        y0 = int(rng.integers(0, raw.height - p + 1))
        x0 = int(rng.integers(0, raw.width - p + 1))
        rot, flip = (int(rng.integers(4)), bool(rng.integers(2))) if self.config.augment else (0, False)
        return int(s), int(t), y0, x0, rot, flip

    def sample(self, index):
        if _exiting.is_set():
            return tuple(np.zeros(shape, np.float32) for shape in self.output_shapes())
        s, t, y0, x0, rot, flip = self.describe(index)
        raw, comp = self.sequences[s]
        c, p = self.config, self.config.patch
        if c.mode == "window":
            inp = comp.luma()[window_indices(t, comp.num_frames, c.radius), y0:y0 + p, x0:x0 + p]
            tgt = raw.luma()[t, y0:y0 + p, x0:x0 + p]
        else:
            inp = comp.luma()[t:t + c.clip_length, y0:y0 + p, x0:x0 + p]
            tgt = raw.luma()[t:t + c.clip_length, y0:y0 + p, x0:x0 + p]
        inp, tgt = augment_planes(inp, rot, flip), augment_planes(tgt, rot, flip)
        to_float = lambda a: np.expand_dims(np.ascontiguousarray(a, dtype=np.float32) / 255.0, -1)  # noqa: E731
        inp = to_float(inp)
        if c.centre_noise:
            rng = np.random.default_rng([c.seed, 2 << 32, int(index)])  # not describe()'s draws
            if rng.integers(2):
                noise = rng.normal(0, c.centre_noise, inp[c.radius].shape).astype(np.float32)
                inp[c.radius] = np.clip(inp[c.radius] + noise, 0.0, 1.0)
        return inp, to_float(tgt)

    def output_shapes(self):
        c, p = self.config, self.config.patch
        if c.mode == "window":
            return (2 * c.radius + 1, p, p, 1), (p, p, 1)
        return (c.clip_length, p, p, 1), (c.clip_length, p, p, 1)


def make_dataset(pairs, config, start_sample=0):
    """An endless, batched tf.data.Dataset (drop_remainder) starting at global sample `start_sample`."""
    import tensorflow as tf

    sampler = PatchSampler(pairs, config)
    in_shape, tgt_shape = sampler.output_shapes()

    def load(index):
        x, y = tf.numpy_function(sampler.sample, [index], [tf.float32, tf.float32], stateful=False)
        return tf.ensure_shape(x, in_shape), tf.ensure_shape(y, tgt_shape)

    ds = tf.data.Dataset.range(int(start_sample), np.iinfo(np.int64).max)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(config.batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def iter_windows(seq, radius):
    """Yield (t, (2R+1, H, W, 1) float32 window) for every frame of a sequence, clipped neighbours."""
    for t in range(seq.num_frames):
        window = seq.luma()[window_indices(t, seq.num_frames, radius)]
        yield t, np.expand_dims(window.astype(np.float32) / 255.0, -1)


def iter_sequence_windows(pair, radius):
    """Whole-frame evaluation: yields (t, (2R+1, H, W, 1) compressed window, (H, W, 1) raw frame)."""
    raw, comp = pair.open()
    for t, window in iter_windows(comp, radius):
        yield t, window, np.expand_dims(raw.y(t).astype(np.float32) / 255.0, -1)
