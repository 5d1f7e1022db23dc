"""Kill -9 resilience of train_main.py, vcar-export and vcar-prepare, measured (not a test).

    python benchmarks/kill9_resilience.py [--kills 20] [--seed 0] [--work DIR]

Trainer: an uninterrupted tiny AR-CNN run gives the reference weights; the same command is then
killed with SIGKILL at `--kills` random moments and rerun each time, then run to its end. Printed:
how many reruns resumed from a checkpoint, the most steps lost by one kill, and whether the final
weights equal the reference bit for bit (the README promises exact resume).
Export: vcar-export killed at random moments into one TF Serving base: no version folder that a
later run or TF Serving would trust may be partial (each numeric folder has saved_model.pb and
loads), and a later export sweeps the temp folders.
Prepare: vcar-prepare killed at random moments, rerun each time, then run to its end: the dataset
must equal an uninterrupted one (sha256 of every YUV file) and no worker may outlive its parent.
"""

import argparse
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe, revision  # noqa: E402
from vcar_tf.video.yuv import write_yuv  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def tiny_dataset(root):
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("test", 1)):
        for i in range(count):
            raw = [tuple(rng.integers(0, 256, s, dtype=np.uint8) for s in ((32, 40), (16, 20), (16, 20)))
                   for _ in range(6)]
            comp = [(np.clip(y.astype(int) + rng.integers(-8, 9, y.shape), 0, 255).astype(np.uint8), u, v)
                    for y, u, v in raw]
            write_yuv(os.path.join(root, split, "raw", f"s{i}_40x32_6.yuv"), raw)
            write_yuv(os.path.join(root, split, "x265_LDP", "QP37", f"s{i}_40x32_6.yuv"), comp)
    return root


CHECKPOINT_EVERY = 20


def train_command(data, model_dir, steps):
    return [sys.executable, "train_main.py", "--model=arcnn", f"--data={data}", "--patch=16", "--batch=2",
            f"--steps={steps}", f"--checkpoint_every={CHECKPOINT_EVERY}", "--lr_schedule=constant", "--noexport",
            f"--model_dir={model_dir}"]


def final_weights(model_dir):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints"))
    names = sorted(n for n in reader.get_variable_to_shape_map() if n.startswith("model/"))
    return {n: reader.get_tensor(n) for n in names}


def kill_at_random(cmd, low, high, rng, after=None):
    """Start cmd, SIGKILL it after a random time in [low, high] s (counted from when its stderr
    first shows `after`, if given); returns (stderr, killed)."""
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=err, text=True)
        while after is not None and p.poll() is None:
            err.seek(0)
            if after in err.read():
                break
            time.sleep(0.05)
        try:
            p.wait(timeout=rng.uniform(low, high))
            killed = False
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            killed = True
        err.seek(0)
        return err.read(), killed


def last_step(stderr):
    """The last step the progress bar showed."""
    steps = [int(m) for m in re.findall(r"\| (\d+)/\d+ \[", stderr)]
    return max(steps, default=0)


def trainer(work, kills, rng, steps=400):
    data = tiny_dataset(os.path.join(work, "data"))
    reference = os.path.join(work, "reference")
    t0 = time.perf_counter()
    subprocess.run(train_command(data, reference, steps), cwd=REPO, env=ENV, check=True, capture_output=True)
    one_run = time.perf_counter() - t0
    killed_dir = os.path.join(work, "killed")
    resumed, lost, reached, done_kills, history = 0, [], 0, 0, []
    for i in range(kills):
        # the first kill lands anywhere (start-up included); later ones inside the training loop,
        # within an eighth of the run each, so that the run ends after all of them
        low, high, after = (0.5, one_run / 2, None) if i == 0 else (0.0, one_run / 8, "train arcnn")
        stderr, killed = kill_at_random(train_command(data, killed_dir, steps), low, high, rng, after)
        start = re.search(r"resumed from \S+ at step (\d+)", stderr)
        if start:
            resumed += 1
            lost.append(max(reached - int(start.group(1)), 0))
        history.append(f"{int(start.group(1)) if start else 0}->{last_step(stderr)}{'' if killed else ' (ended)'}")
        reached = max(last_step(stderr), int(start.group(1)) if start else 0)
        if not killed:
            if "error" in stderr.lower() or "Traceback" in stderr:
                history.append("ended with: " + stderr.strip().splitlines()[-1][-300:])
            break
        done_kills += 1
    done = subprocess.run(train_command(data, killed_dir, steps), cwd=REPO, env=ENV, capture_output=True, text=True)
    if done.returncode:
        history.append("final run: " + done.stderr.strip().splitlines()[-1][-300:])
    ref, got = final_weights(reference), final_weights(killed_dir)
    equal = ref.keys() == got.keys() and all(np.array_equal(ref[k], got[k]) for k in ref)
    print(f"trainer: {done_kills} kills over a {one_run:.1f} s run of {steps} steps (checkpoint every {CHECKPOINT_EVERY}): "
          f"{resumed} reruns resumed from a checkpoint, at most {max(lost, default=0)} steps lost by one kill, "
          f"{reached} steps done before the last rerun; final run exit {done.returncode}; "
          f"final weights {'equal' if equal else 'DIFFER from'} the uninterrupted run's bit for bit\n"
          f"  steps of each killed run (resumed at -> last shown): {', '.join(history)}")
    return data, reference


def exporter(work, run, kills, rng):
    base = os.path.join(work, "serving", "arcnn")
    cmd = [sys.executable, "-m", "vcar_tf.cli.export", "--model_dir", run, "--out", os.path.dirname(base)]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=ENV, check=True, capture_output=True)
    one_run = time.perf_counter() - t0
    for _ in range(kills):
        kill_at_random(cmd, 1.0, one_run, rng)
    partial = [d for d in os.listdir(base) if d.isdigit()
               and not os.path.exists(os.path.join(base, d, "saved_model.pb"))]
    temps_before = [d for d in os.listdir(base) if d.startswith(".tmp-")]
    subprocess.run(cmd, cwd=REPO, env=ENV, check=True, capture_output=True)
    temps_after = [d for d in os.listdir(base) if d.startswith(".tmp-")]
    import tensorflow as tf

    versions = sorted(int(d) for d in os.listdir(base) if d.isdigit())
    loads = sum(1 for v in versions if "serving_default" in tf.saved_model.load(os.path.join(base, str(v))).signatures)
    print(f"export: {kills} kills over a {one_run:.1f} s export: {len(versions)} version folders, "
          f"{len(partial)} partial, {loads} load with their signatures; temp folders left by kills: "
          f"{len(temps_before)}, after the next export: {len(temps_after)}")


def dataset_digest(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".yuv") and not name.startswith("."):
                with open(os.path.join(folder, name), "rb") as f:
                    out[os.path.relpath(os.path.join(folder, name), root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def orphans(marker):
    """Processes still running whose command line holds `marker` (a prepare's output folder)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def preparer(work, source_dir, kills, rng):
    ref = os.path.join(work, "prepared_ref")
    cmd = lambda out: [sys.executable, "-m", "vcar_tf.cli.prepare", "--raw", source_dir, "--qp", "37", "42",  # noqa: E731
                       "--out", out, "--workers", "2"]
    t0 = time.perf_counter()
    subprocess.run(cmd(ref), cwd=REPO, env=ENV, check=True, capture_output=True)
    one_run = time.perf_counter() - t0
    out = os.path.join(work, "prepared_killed")
    alive = 0
    for _ in range(kills):
        kill_at_random(cmd(out), 0.5, one_run, rng)
        time.sleep(0.5)
        alive += len(orphans(out))
    subprocess.run(cmd(out), cwd=REPO, env=ENV, check=True, capture_output=True)
    equal = dataset_digest(ref) == dataset_digest(out)
    print(f"prepare: {kills} kills over a {one_run:.1f} s prepare: workers alive 0.5 s after a kill: {alive}; "
          f"final dataset {'equals' if equal else 'DIFFERS from'} an uninterrupted one ({len(dataset_digest(ref))} "
          f"YUV files)")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None)
    p.add_argument("--only", choices=["trainer"], default=None, help="measure the trainer only")
    args = p.parse_args()
    print(f"# kill -9 resilience, {revision()}\n# {describe()}")
    rng = random.Random(args.seed)
    work = args.work or tempfile.mkdtemp(prefix="vcar-kill9-")
    try:
        data, reference = trainer(work, args.kills, rng)
        if args.only == "trainer":
            return
        exporter(work, reference, max(args.kills // 2, 1), rng)
        sources = os.path.join(work, "sources")
        os.makedirs(sources)
        rng_np = np.random.default_rng(1)
        for i in range(3):
            write_yuv(os.path.join(sources, f"clip{i}_64x48_12.yuv"),
                      [tuple(rng_np.integers(0, 256, s, dtype=np.uint8) for s in ((48, 64), (24, 32), (24, 32)))
                       for _ in range(12)])
        preparer(work, sources, max(args.kills // 2, 1), rng)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
