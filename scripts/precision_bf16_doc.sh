#!/usr/bin/env bash
# docs/precision-bf16.md from the bf16 evaluations that scripts/preset_precision.py recorded in
# docs/evaluations/: for every shipped preset with a bf16 test evaluation, its fp32 and bf16 test
# reports side by side (vcar-compare), the QP37 presets in the first table (with
# docs/precision-bf16-notes.md), then a section per other QP, as each QP has its own compressed
# frames. It reads only the records: no model runs. Run from the repository root.
set -euo pipefail
records=docs/evaluations
out=docs/precision-bf16.md
declare -A by_qp=()
listed=$(python -m vcar_tf.models --presets)  # a failure ends the script here (set -e)
while read -r name _ qp _; do
  [ -n "$name" ] || continue
  [ -f "$records/preset-eval-bf16/$name/report.csv" ] || continue
  [ -f "$records/preset-eval/$name/report.csv" ] || { echo "error: $name has a bf16 record but no fp32 one" >&2; exit 2; }
  by_qp[${qp#QP}]+="$name "
done <<< "$listed"
[ -n "${by_qp[37]:-}" ] || { echo "error: no QP37 preset has a bf16 record (python scripts/preset_precision.py NAME)" >&2; exit 2; }

compare_qp() {  # QP, then vcar-compare's other arguments
  local qp=$1 folders=() labels=()
  shift
  for name in ${by_qp[$qp]}; do
    folders+=("$records/preset-eval/$name" "$records/preset-eval-bf16/$name")
    labels+=(--label "$name fp32" --label "$name bf16")
  done
  vcar-compare "${folders[@]}" "${labels[@]}" "$@" --out "$out" > /dev/null
}

compare_qp 37 --title "bf16 against fp32 inference on the test split" --notes docs/precision-bf16-notes.md
for qp in $(printf '%s\n' "${!by_qp[@]}" | sort -n); do
  [ "$qp" = 37 ] || compare_qp "$qp" --title "Presets at QP $qp: bf16 against fp32 on the test split" --append
done
echo "wrote $out"
