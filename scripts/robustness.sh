#!/usr/bin/env bash
# The robustness table of docs/results.md (issue 15): every QP37 preset the package ships, unchanged
# (`vcar-evaluate --preset NAME`), on the whole test split compressed three other ways than it was
# trained on (x265 LDP QP37 with deblocking and SAO on), beside its in-domain evaluation
# (runs/preset-eval/NAME, made by scripts/preset_results.sh, which runs this script last):
#   x265 LDP QP37 with the loop filters off; x264 LDP QP37 (deblocking on, as H.264 has it);
#   x265's own random-access GOP (B-frames), loop filters on, at the CRF chosen on val for a
#   bitrate like the presets' (scripts/choose_ra_crf.py, docs/robustness-crf.md).
# Evaluations already made are kept, in runs/ or in their records (scripts/evaluate_recorded.py,
# docs/evaluations/preset-eval-robustness/VARIANT/NAME); TABULATE_ONLY=1 makes the table from those
# alone, leaving the cells of the others empty; under preset_results.sh's MERGE=1 those keep today's values.
# `python -m` runs this checkout's code. Run from the repository root with ../shared beside it.
set -euo pipefail
CRF=${CRF:-33}  # chosen on val: docs/robustness-crf.md
# variant folder | vcar-prepare flags | vcar-evaluate flags | column label
VARIANTS=(
  "x265_LDP_QP37|--qp 37|--qp 37|x265 LDP QP37, loop filters off"
  "x264_LDP_dbk_QP37|--codec x264 --qp 37 --deblock|--qp 37|x264 LDP QP37"
  "x265_RA_dbk_sao_CRF$CRF|--gop ra --crf $CRF --deblock --sao|--crf $CRF|x265 RA CRF$CRF"
)
presets=$(python -m vcar_tf.models --presets | awk '$3 == "QP37" {print $1}')
[ -n "$presets" ] || { echo "error: no QP37 preset ships" >&2; exit 2; }
TITLE="Robustness: the QP37 presets on other compressions of the test split"
merge=()
[ -z "${MERGE_FROM:-}" ] || merge=(--merge "$MERGE_FROM")  # preset_results.sh's MERGE=1
runs=() labels=() groups=()
for name in $presets; do
  if [ ! -f "runs/preset-eval/$name/report.csv" ]; then
    [ -n "${MERGE_FROM:-}" ] && continue  # kept from today's grid
    echo "error: no runs/preset-eval/$name: run scripts/preset_results.sh" >&2
    exit 2
  fi
  runs+=("runs/preset-eval/$name") labels+=(--label "$name") groups+=(--group "trained on: x265 LDP QP37 dbk+SAO")
done
for variant in "${VARIANTS[@]}"; do
  IFS='|' read -r folder prep eval label <<< "$variant"
  # shellcheck disable=SC2086  # the flags split into words
  python -m vcar_tf.cli.prepare --raw ../shared/data --split test --out "data/robustness/$folder/test" $prep
  for name in $presets; do
    out="runs/preset-eval-robustness/$folder/$name"
    only=()
    [ "${TABULATE_ONLY:-0}" = 1 ] && only=(--restore-only)
    [ -z "${MERGE_FROM:-}" ] || only+=(--kept-in "$MERGE_FROM" --title "$TITLE" --group "$label")
    # shellcheck disable=SC2086
    python scripts/evaluate_recorded.py --preset "$name" --data "data/robustness/$folder" $eval --out "$out" "${only[@]}"
    if [ ! -f "$out/report.csv" ]; then
      [ -n "${MERGE_FROM:-}" ] || echo "note: $out is not evaluated yet: its cells stay empty" >&2
      continue
    fi
    runs+=("$out") labels+=(--label "$name") groups+=(--group "$label")
  done
done
python -m vcar_tf.cli.compare "${runs[@]}" "${labels[@]}" "${groups[@]}" "${merge[@]}" \
  --notes docs/results-robustness-notes.md --out "${RESULTS_MD:-docs/results.md}" --append --title "$TITLE"
