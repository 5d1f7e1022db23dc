#!/usr/bin/env bash
# Train one QP37 preset with the one recipe every preset shares (issue 15), resumably:
#   x265 LDP with deblocking and SAO on, QP37; the shared train split trains, its val split
#   validates (every 1,400 steps: the learning curve that says when to stop); 5,600 steps of
#   16 x 64x64 crops (1.8e8 target pixels); Adam 5e-4 after a 200-step warm-up, cosine decay to
#   5e-5; L2 loss; a checkpoint every 200 steps.
#
#   bash scripts/train_preset.sh MODEL            # e.g. stdf_r3; rerun the same line to resume
#
# The run goes to runs/presets/MODEL_x265_qp37. A run committed under training/presets/ (weights,
# optimizer and step of an unfinished run, so that a later session resumes it exactly) is copied
# there first when runs/ has none. The test split is prepared for the card's evaluation
# (scripts/make_preset.py), never read by training. Run from the repository root with ../shared beside it.
set -euo pipefail
# Under `setsid nice -n 19` the run should yield the CPU to everything else, but where the kernel
# schedules per session (autogroup) nice only ranks tasks within one session: lower the session too.
if [ "$(nice)" -gt 0 ] && [ "$(ps -o sid= -p $$ | tr -d ' ')" = "$$" ] && [ -w /proc/self/autogroup ]; then
  echo "$(nice)" > /proc/self/autogroup
fi
MODEL=${1:?usage: bash scripts/train_preset.sh MODEL}
NAME="${MODEL}_x265_qp37"
RUN="runs/presets/$NAME"
for split in train val; do
  vcar-prepare --raw ../shared/data --split "$split" --out "data/presets/$split" --qp 37 --deblock --sao
done
vcar-prepare --raw ../shared/data --split test --out data/presets-test/test --qp 37 --deblock --sao
if [ ! -d "$RUN" ] && [ -d "training/presets/$NAME" ]; then
  mkdir -p runs/presets
  cp -r "training/presets/$NAME" "$RUN"
fi
python train_main.py --model="$MODEL" --data=data/presets --qp=37 --batch=16 --patch=64 --steps=5600 \
  --lr=5e-4 --warmup_steps=200 --loss=l2 --eval_every=1400 --checkpoint_every=200 \
  --model_dir="$RUN" --noexport
