#!/usr/bin/env bash
# The first real results (docs/results-500-steps.md): every model with the same budget of 500 steps (batch 8,
# 48x48 crops, Adam 1e-3 with cosine decay) on the shared train split, x265 LDP QP37 with deblocking
# and SAO off, evaluated on the whole test split, with the default L2 loss (docs/models.md says why).
# RFDA: stage 1 is the STDF+DSTA run; stage 2 starts from it (--init_from), trains the stage-1
# weights at 1e-5 and the recursive fusion at 1e-3 on 15-frame clips, 100 steps of batch 2
# (3,000 frames, against stage 1's 4,000 windows).
# Run from the repository root with ../shared beside it. MODELS picks a subset (default: all).
set -euo pipefail
STEPS=${STEPS:-500}
MODELS=${MODELS:-"stifn_r3 arcnn dncnn stdf_r3 stdf_dsta rfda nl_convlstm"}
for split in train test; do
  vcar-prepare --raw ../shared/data --split "$split" --out "data/shared/$split" --qp 37
done
for model in $MODELS; do
  extra=()
  if [ "$model" = rfda ]; then
    extra=(--init_from=runs/shared-qp37/stdf_dsta --init_lr=1e-5 --clip_length=15 --batch=2 --steps=100)
  fi
  python train_main.py --model="$model" --data=data/shared --steps="$STEPS" \
    --model_dir="runs/shared-qp37/$model" --noexport "${extra[@]}"
done
runs=()
for model in arcnn dncnn stifn_r3 stdf_r3 stdf_dsta rfda nl_convlstm; do
  [ -d "runs/shared-qp37/$model/eval" ] && runs+=("runs/shared-qp37/$model")
done
vcar-compare "${runs[@]}" \
  --title "First results: shared test split, x265 LDP QP37" --notes docs/results-500-steps-notes.md --out docs/results-500-steps.md
