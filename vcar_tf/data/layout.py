"""Dataset layout (MFQE 2.0 style): ROOT/raw/NAME_WxH_N.yuv and ROOT/<codec folder>/QP<qp>/ (or
CRF<crf>/) with the same names. Reads the MFQE 2.0 release as distributed (train_108/raw, HM16.5_LDP/QP37)."""

import dataclasses
import glob
import os
import re

from vcar_tf.data.codec import CodecSettings, rate_folder
from vcar_tf.data.sample import ensure_sample_dataset
from vcar_tf.errors import VcarError
from vcar_tf.video.yuv import YuvSequence


@dataclasses.dataclass(frozen=True)
class SequencePair:
    name: str
    raw_path: str
    compressed_path: str

    def open(self):
        """(raw, compressed) memory-mapped YuvSequence objects."""
        raw, comp = YuvSequence(self.raw_path), YuvSequence(self.compressed_path)
        if (raw.width, raw.height, raw.num_frames) != (comp.width, comp.height, comp.num_frames):
            raise VcarError(f"{self.name}: raw and compressed sequences differ in size or length")
        return raw, comp


def compressed_folders(root, qp, crf=None):
    """Codec folders under `root` that hold a QP<qp> (or CRF<crf>) folder, e.g. ['x265_LDP', 'HM16.5_LDP']."""
    return sorted(os.path.basename(os.path.dirname(d))
                  for d in glob.glob(os.path.join(root, "*", rate_folder(qp, crf))) if os.path.isdir(d))


def find_pairs(root, qp=37, codec_folder=None, crf=None):
    """All (raw, compressed) sequence pairs of a dataset root at one QP (or, given crf, one CRF)."""
    raw_dir = os.path.join(root, "raw")
    level = rate_folder(qp, crf)
    flag = f"--gop ra --crf {crf}" if crf is not None else f"--qp {qp}"
    if not os.path.isdir(raw_dir):
        raise VcarError(f"dataset not found: {root} has no raw/ folder")
    if codec_folder is None:
        found = compressed_folders(root, qp, crf)
        if not found:
            raise VcarError(f"{root} has no compressed {level} folder; run vcar-prepare with {flag}")
        if len(found) > 1:
            raise VcarError(f"{root} has several {level} codec folders ({', '.join(found)}); choose one")
        codec_folder = found[0]
    comp_dir = os.path.join(root, codec_folder, level)
    if not os.path.isdir(comp_dir):
        raise VcarError(f"{comp_dir} does not exist")
    pairs = []
    for raw_path in sorted(glob.glob(os.path.join(raw_dir, "*.yuv"))):
        base = os.path.basename(raw_path)
        comp_path = os.path.join(comp_dir, base)
        if os.path.exists(comp_path):
            pairs.append(SequencePair(base[:-4], raw_path, comp_path))
    if not pairs:
        raise VcarError(f"no sequence of {raw_dir} has a compressed twin in {comp_dir}")
    return pairs


def is_sample(data):
    """Whether `data` names the embedded sample dataset rather than a folder."""
    return data in (None, "", "sample")


def check_dataset_folder(data):
    """A one-line error for a dataset folder that does not exist (before a model is loaded)."""
    if not is_sample(data) and not os.path.isdir(data):
        raise VcarError(f"dataset not found: {data}")


def resolve_datasets(data, settings=None):
    """Dataset roots by name: the embedded sample (data None or 'sample') builds itself;
    a folder with raw/ is one dataset; a folder of such folders (e.g. train/, test/) is several."""
    if is_sample(data):
        root = ensure_sample_dataset([settings or CodecSettings()])
        return {split: os.path.join(root, split) for split in ("train", "test")}
    check_dataset_folder(data)
    if os.path.isdir(os.path.join(data, "raw")):
        return {os.path.basename(os.path.normpath(data)): data}
    found = {n: os.path.join(data, n) for n in sorted(os.listdir(data))
             if os.path.isdir(os.path.join(data, n, "raw"))}
    if not found:
        raise VcarError(f"dataset not found: {data} has no raw/ folder (nor subfolders with one)")
    return found


def prepared_codec_folder(data, settings=None, codec_folder=None):
    """`codec_folder`, or for the embedded sample the one of `settings` that resolve_datasets prepared:
    the sample's cache may hold other compressions beside it (int8's calibration caches the default)."""
    if codec_folder is None and is_sample(data):
        return (settings or CodecSettings()).codec_folder
    return codec_folder


def is_test_split(name):
    """test/, testing/ and names that go on past them with a non-letter (MFQE's test_18/)."""
    return re.fullmatch(r"test(ing)?([^a-z].*)?", name.lower()) is not None


def is_held_out_split(name):
    """A test split, or val/, valid/, validation/ (and val_2/...): never trained on."""
    return is_test_split(name) or re.fullmatch(r"val(id(ation)?)?([^a-z].*)?", name.lower()) is not None


def split_datasets(data, settings=None, need_train=True):
    """(train roots, held-out roots) of resolve_datasets(data, settings): test and validation
    folders (is_held_out_split) are held out, the rest train (evaluation passes need_train=False)."""
    roots = resolve_datasets(data, settings)
    val = {k: v for k, v in roots.items() if is_held_out_split(k)}
    train = {k: v for k, v in roots.items() if k not in val}
    if not train and need_train:
        raise VcarError(f"{data}: no training split found (expected e.g. train/ beside test/)")
    return train, val
