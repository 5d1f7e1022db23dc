#!/usr/bin/env bash
# The other-QP section of docs/results.md (issue 15): every preset the package ships at a QP other
# than 37 (the fine-tunes of scripts/train_preset.sh MODEL QP), as a user gets it
# (`vcar-evaluate --preset NAME`), on the whole test split at its QP (x265 LDP, deblocking and SAO
# on), beside the same model's QP37 preset applied unchanged to the same data: what fine-tuning to
# the QP buys. Evaluations already made are kept (scripts/evaluate_recorded.py; under
# preset_results.sh's MERGE=1, today's cells too).
# scripts/preset_results.sh runs it after the robustness table. `python -m` runs this checkout's
# code. Run from the repository root with ../shared beside it.
set -euo pipefail
TITLE="Other QPs: the fine-tuned presets against the QP37 preset unchanged"
merge=()
[ -z "${MERGE_FROM:-}" ] || merge=(--merge "$MERGE_FROM")  # preset_results.sh's MERGE=1
runs=() labels=() groups=() presets=0
# listed first: a failure of the listing ends the script (set -e), where inside < <(...) it read as no preset
listed=$(python -m vcar_tf.models --presets)
other_qp=$(awk '$3 != "QP37" {print $1, $2, $3}' <<< "$listed" | sort -k3)
while read -r name model qp_label; do
  [ -n "$name" ] || continue
  qp=${qp_label#QP}
  base="${model}_x265_qp37"
  presets=$((presets + 1))
  python -m vcar_tf.cli.prepare --raw ../shared/data --split test --out data/presets-test/test --qp "$qp" --deblock --sao
  for preset in "$base" "$name"; do
    out="runs/preset-eval-qp/QP$qp/$preset"
    keep=()
    [ -z "${MERGE_FROM:-}" ] || keep=(--kept-in "$MERGE_FROM" --title "$TITLE" --group "test split at QP$qp")
    python scripts/evaluate_recorded.py --preset "$preset" --data data/presets-test --qp "$qp" --out "$out" "${keep[@]}"
    [ -f "$out/report.csv" ] || continue  # MERGE=1: kept from today's grid
    runs+=("$out") labels+=(--label "$preset") groups+=(--group "test split at QP$qp")
  done
done <<< "$other_qp"
if [ "$presets" -eq 0 ]; then
  echo "note: no preset ships at a QP other than 37: no other-QP section" >&2
  exit 0
fi
python -m vcar_tf.cli.compare "${runs[@]}" "${labels[@]}" "${groups[@]}" "${merge[@]}" --notes docs/results-qp-notes.md \
  --out "${RESULTS_MD:-docs/results.md}" --append --title "$TITLE"
