#!/usr/bin/env bash
# The first real results (docs/results.md): AR-CNN, DnCNN, STIFN-R3, STDF-R3 and NL-ConvLSTM with the same step budget
# on the shared train split, x265 LDP QP37, deblocking and SAO off; evaluated on the test split.
# Run from the repository root with ../shared beside it. STEPS defaults to 500.
set -euo pipefail
STEPS=${STEPS:-500}
for split in train test; do
  python -m vcar_tf.data.prepare --raw ../shared/data --split "$split" --out "data/shared/$split" --qp 37
done
for model in stifn_r3 arcnn dncnn stdf_r3 nl_convlstm; do
  python train_main.py --model="$model" --data=data/shared --steps="$STEPS" \
    --model_dir="runs/shared-qp37/$model" --noexport
done
python -m vcar_tf.compare runs/shared-qp37/arcnn runs/shared-qp37/dncnn runs/shared-qp37/stifn_r3 runs/shared-qp37/stdf_r3 \
  runs/shared-qp37/nl_convlstm \
  --title "First results: shared test split, x265 LDP QP37" --notes docs/results-notes.md --out docs/results.md
