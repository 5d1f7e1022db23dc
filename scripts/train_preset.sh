#!/usr/bin/env bash
# Train one preset (issue 15), resumably, on x265 LDP with deblocking and SAO on, from the shared
# train split, validated on its val split (the learning curve that says when to stop).
#
#   bash scripts/train_preset.sh MODEL        # the QP37 recipe, e.g. stdf_r3; rerun to resume
#   bash scripts/train_preset.sh MODEL QP     # QP 22, 27, 32 or 42: fine-tune of MODEL's QP37 preset
#   bash scripts/train_preset.sh rfda         # RFDA's stage 2, after `... stdf_dsta` (its stage 1) finished
#   bash scripts/train_preset.sh MODEL 37 continue   # does a longer run pay? (below)
#
# QP37, the one recipe every QP37 preset shares: 5,600 steps of 16 x 64x64 crops (3.7e8 target
# pixels); Adam 5e-4 after a 200-step warm-up, cosine decay to 5e-5; L2 loss; validation every
# 1,400 steps. Other QPs, as the STDF authors did: start from the shipped MODEL_x265_qp37 preset,
# 2,800 steps of the same crops at Adam 1e-4 after a 100-step warm-up, cosine decay; validation
# every 700 steps, and the best on val is the step shipped (make_preset.py --checkpoint best).
# RFDA (QP37 only): stage 1 is the stdf_dsta run of the QP37 recipe; stage 2 starts from its last
# step and trains on 15-frame clips, batch 2 (30 target frames of 64x64 per step, so a 24 GiB host
# holds it): the recursive fusion at Adam 5e-4 after a 100-step warm-up, cosine decay, the
# stage-1 weights at a constant 1e-5; 1,400 steps, validation every 350, the best on val shipped.
# Either way a checkpoint every 200 steps, and the best on val kept in RUN/best.
# `continue` (QP37 only) asks whether a longer run would pay, never overwriting a preset: from the
# shipped MODEL_x265_qp37 preset, 7,000 more steps of the same crops and loss (12,600 in all, 2.25x
# the recipe), Adam 2e-4 after a 100-step warm-up, cosine decay to 2e-5, seed 1 (other crops than
# the recipe's seed 0), validation every 1,400 steps, into runs/longer/MODEL_x265_qp37.
#
# The run goes to runs/presets/MODEL_x265_qpQP. A run committed under training/presets/ (weights,
# optimizer and step of an unfinished run, so that a later session resumes it exactly) is copied
# there first when runs/ has none. The test split is prepared for the card's evaluation
# (scripts/make_preset.py), never read by training. Run from the repository root with ../shared beside it.
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(run_folder ...) ends the script too
# Under `setsid nice -n 19` the run should yield the CPU to everything else, but where the kernel
# schedules per session (autogroup) nice only ranks tasks within one session: lower the session too.
if [ "$(nice)" -gt 0 ] && [ "$(ps -o sid= -p $$ | tr -d ' ')" = "$$" ] && [ -w /proc/self/autogroup ]; then
  echo "$(nice)" > /proc/self/autogroup
fi
# runs/presets/NAME, copied from training/presets/NAME (a committed run) when runs/ has none.
# Copied whole or not at all: a failed or killed copy leaves only the temp folder, which the next
# run replaces (a partial runs/presets/NAME would be resumed from, or trained anew).
run_folder() {
  if [ ! -d "runs/presets/$1" ] && [ -d "training/presets/$1" ]; then
    mkdir -p runs/presets
    rm -rf "runs/presets/.tmp-$1"
    cp -r "training/presets/$1" "runs/presets/.tmp-$1"
    mv "runs/presets/.tmp-$1" "runs/presets/$1"
  fi
  echo "runs/presets/$1"
}
if [ $# -lt 1 ] || [ $# -gt 3 ] || { [ $# -eq 3 ] && [ "$3" != continue ]; }; then
  echo "error: usage: bash scripts/train_preset.sh MODEL [QP [continue]]" >&2
  exit 2
fi
MODEL=$1
QP=${2:-37}
BATCH=16
RUN=  # the run folder; runs/presets/NAME unless set below
case "$MODEL:$QP:${3:-}" in
  *:continue)
    if [ "$MODEL" = rfda ] || [ "$QP" != 37 ]; then
      echo "error: continue goes with a QP37 window preset (not $MODEL at QP$QP)" >&2
      exit 2
    fi
    RUN=runs/longer/${MODEL}_x265_qp37
    RECIPE=(--steps=7000 --lr=2e-4 --warmup_steps=100 --eval_every=1400 --seed=1
            "--init_from=preset:${MODEL}_x265_qp37") ;;
  rfda:37:)
    STAGE1=$(run_folder stdf_dsta_x265_qp37)
    if ! grep -qs '^model_checkpoint_path: "ckpt-5600"$' "$STAGE1/checkpoints/checkpoint"; then
      echo "error: RFDA's stage 2 starts from a finished stage 1: run bash scripts/train_preset.sh stdf_dsta first" \
           "($STAGE1 has no checkpoint of step 5600)" >&2
      exit 2
    fi
    BATCH=2
    RECIPE=(--steps=1400 --lr=5e-4 --warmup_steps=100 --eval_every=350 --clip_length=15
            "--init_from=$STAGE1" --init_lr=1e-5) ;;
  rfda:*) echo "error: RFDA's preset recipe is QP37 only, not $QP" >&2
          exit 2 ;;
  *:37:) RECIPE=(--steps=5600 --lr=5e-4 --warmup_steps=200 --eval_every=1400) ;;
  *:22:|*:27:|*:32:|*:42:) RECIPE=(--steps=2800 --lr=1e-4 --warmup_steps=100 --eval_every=700
                       "--init_from=preset:${MODEL}_x265_qp37") ;;
  *) echo "error: QP must be 37 (the recipe) or 22, 27, 32, 42 (fine-tunes of the QP37 preset), not $QP" >&2
     exit 2 ;;
esac
NAME="${MODEL}_x265_qp${QP}"
for split in train val; do
  vcar-prepare --raw ../shared/data --split "$split" --out "data/presets/$split" --qp "$QP" --deblock --sao
done
vcar-prepare --raw ../shared/data --split test --out data/presets-test/test --qp "$QP" --deblock --sao
[ -n "$RUN" ] || RUN=$(run_folder "$NAME")
python train_main.py --model="$MODEL" --data=data/presets --qp="$QP" --batch="$BATCH" --patch=64 "${RECIPE[@]}" \
  --loss=l2 --checkpoint_every=200 --model_dir="$RUN" --noexport
