#!/usr/bin/env bash
# docs/results.md from the presets the package ships (issue 15): every QP37 preset, as a user gets it
# (`vcar-evaluate --preset NAME`), on the whole test split compressed the presets' way (x265 LDP,
# deblocking and SAO on, QP37), side by side with vcar-compare, and their SD and PVD; then the robustness table
# (scripts/robustness.sh), and the presets of other QPs (scripts/qp_results.sh). Evaluations already made are kept:
# every evaluation goes through scripts/evaluate_recorded.py, which records it in docs/evaluations/ and
# reuses a record while the weights and the sequences are the same (delete runs/X and
# docs/evaluations/X to redo one).
#   MERGE=1 bash scripts/preset_results.sh   # evaluate only what today's docs/results.md lacks
# keeps the cells of today's docs/results.md (at their printed precision; vcar-compare --merge) for
# every evaluation that neither runs/ nor a record holds, so that a new preset costs its own
# evaluations alone; a changed preset must then be evaluated first (its record or runs/ folder wins).
# Run from the repository root with ../shared beside it.
set -euo pipefail
# docs/results.md is replaced only at the end: a run stopped halfway leaves it as it was
RESULTS_MD=$(mktemp docs/.results.XXXXXX.md)
MERGE_FROM=
trap 'rm -f "$RESULTS_MD" ${MERGE_FROM:+"$MERGE_FROM"}' EXIT
export RESULTS_MD  # robustness.sh and qp_results.sh add their sections to it
if [ "${MERGE:-0}" = 1 ]; then
  MERGE_FROM=$(mktemp)
  cp docs/results.md "$MERGE_FROM"
  export MERGE_FROM  # robustness.sh and qp_results.sh merge their sections from it too
fi
merge=() keep=()
[ -z "${MERGE_FROM:-}" ] || merge=(--merge "$MERGE_FROM") keep=(--kept-in "$MERGE_FROM")
vcar-prepare --raw ../shared/data --split test --out data/presets-test/test --qp 37 --deblock --sao
folders=() labels=() names=0
for name in $(python -m vcar_tf.models --presets | awk '$3 == "QP37" {print $1}'); do
  out="runs/preset-eval/$name"
  names=$((names + 1))
  python scripts/evaluate_recorded.py --preset "$name" --data data/presets-test --out "$out" "${keep[@]}"
  [ -f "$out/report.csv" ] || continue  # MERGE=1: kept from today's table
  folders+=("$out") labels+=(--label "$name")
done
[ "$names" -gt 0 ] || { echo "error: no QP37 preset ships" >&2; exit 2; }
# The yardstick, where ../shared/weights is beside the repository (never shipped): the authors'
# released STDF-R3 (HM16.5 LDP QP37, 290,000 iterations), imported, on the same data.
RELEASE=../shared/weights/stdf-pytorch/stdf_mfqev2_r3.safetensors
if [ -f "$RELEASE" ]; then
  [ -d runs/stdf-pytorch-release ] || vcar-import stdf-pytorch "$RELEASE" --out runs/stdf-pytorch-release
  out=runs/preset-eval/stdf-pytorch-release
  label="STDF-R3 release (reference, not shipped)"
  python scripts/evaluate_recorded.py --model_dir runs/stdf-pytorch-release --key-file "$RELEASE" \
    --data data/presets-test --qp 37 --out "$out" "${keep[@]}" ${keep[0]:+--label "$label"}
  [ ! -f "$out/report.csv" ] || folders+=("$out") labels+=(--label "$label")
fi
vcar-compare "${folders[@]}" "${labels[@]}" "${merge[@]}" --notes docs/results-notes.md --out "$RESULTS_MD" \
  --title "Presets: the shared test split, x265 LDP with deblocking and SAO, QP37"
# SD and PVD of the same evaluations, from their reports (a column that MERGE=1 kept from the old
# table has no report, so it is not in this one)
[ ${#folders[@]} -eq 0 ] || vcar-compare "${folders[@]}" "${labels[@]}" --fluctuation --out "$RESULTS_MD" --append \
  --title "Quality fluctuation: SD and PVD of the per-frame PSNR, the same evaluations"
# The robustness table (the same presets on the test split compressed other ways), then the presets
# fine-tuned to other QPs beside the QP37 preset unchanged at those QPs: sections of the file above.
bash scripts/robustness.sh
bash scripts/qp_results.sh
chmod 644 "$RESULTS_MD"
mv "$RESULTS_MD" docs/results.md
