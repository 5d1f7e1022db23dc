#!/usr/bin/env bash
# Train one preset (issue 15), resumably, on x265 LDP with deblocking and SAO on, from the shared
# train split, validated on its val split (the learning curve that says when to stop).
#
#   bash scripts/train_preset.sh MODEL        # the QP37 recipe, e.g. stdf_r3; rerun to resume
#   bash scripts/train_preset.sh MODEL QP     # QP 22, 27, 32 or 42: fine-tune of MODEL's QP37 preset
#
# QP37, the one recipe every QP37 preset shares: 5,600 steps of 16 x 64x64 crops (1.8e8 target
# pixels); Adam 5e-4 after a 200-step warm-up, cosine decay to 5e-5; L2 loss; validation every
# 1,400 steps. Other QPs, as the STDF authors did: start from the shipped MODEL_x265_qp37 preset,
# 2,800 steps of the same crops at Adam 1e-4 after a 100-step warm-up, cosine decay; validation
# every 700 steps, and the best on val is the step shipped (make_preset.py --checkpoint best).
# Either way a checkpoint every 200 steps, and the best on val kept in RUN/best.
#
# The run goes to runs/presets/MODEL_x265_qpQP. A run committed under training/presets/ (weights,
# optimizer and step of an unfinished run, so that a later session resumes it exactly) is copied
# there first when runs/ has none. The test split is prepared for the card's evaluation
# (scripts/make_preset.py), never read by training. Run from the repository root with ../shared beside it.
set -euo pipefail
# Under `setsid nice -n 19` the run should yield the CPU to everything else, but where the kernel
# schedules per session (autogroup) nice only ranks tasks within one session: lower the session too.
if [ "$(nice)" -gt 0 ] && [ "$(ps -o sid= -p $$ | tr -d ' ')" = "$$" ] && [ -w /proc/self/autogroup ]; then
  echo "$(nice)" > /proc/self/autogroup
fi
MODEL=${1:?usage: bash scripts/train_preset.sh MODEL [QP]}
QP=${2:-37}
case "$QP" in
  37) RECIPE=(--steps=5600 --lr=5e-4 --warmup_steps=200 --eval_every=1400) ;;
  22|27|32|42) RECIPE=(--steps=2800 --lr=1e-4 --warmup_steps=100 --eval_every=700
                       "--init_from=preset:${MODEL}_x265_qp37") ;;
  *) echo "error: QP must be 37 (the recipe) or 22, 27, 32, 42 (fine-tunes of the QP37 preset), not $QP" >&2
     exit 2 ;;
esac
NAME="${MODEL}_x265_qp${QP}"
RUN="runs/presets/$NAME"
for split in train val; do
  vcar-prepare --raw ../shared/data --split "$split" --out "data/presets/$split" --qp "$QP" --deblock --sao
done
vcar-prepare --raw ../shared/data --split test --out data/presets-test/test --qp "$QP" --deblock --sao
if [ ! -d "$RUN" ] && [ -d "training/presets/$NAME" ]; then
  mkdir -p runs/presets
  cp -r "training/presets/$NAME" "$RUN"
fi
python train_main.py --model="$MODEL" --data=data/presets --qp="$QP" --batch=16 --patch=64 "${RECIPE[@]}" \
  --loss=l2 --checkpoint_every=200 --model_dir="$RUN" --noexport
