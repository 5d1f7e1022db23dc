"""What bf16 or int8 inference costs a shipped preset (issue 21), written into its card for --precision auto.

    python scripts/preset_precision.py NAME [NAME ...] [--precision bf16|int8] [--val-data data/presets]
        [--test-data data/presets-test]

Each preset is evaluated on the val split in fp32 and in the --precision (bf16 by default), and on
the test split in that precision (its fp32 test evaluation is preset_results.sh's
runs/preset-eval/NAME), every evaluation through evaluate_recorded.py (recorded in
docs/evaluations/, reused while weights and sequences are the same). The card's entry of that
precision gets the val cost (fp32 ΔPSNR minus its ΔPSNR), which alone decides whether
`--precision auto` computes in it (at most PRECISION_BUDGET_DB), and the test cost, reported.
Run from the repository root with both datasets prepared (scripts/train_preset.sh prepares them).
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.dirname(os.path.abspath(__file__))]  # this checkout's code
import evaluate_recorded  # noqa: E402
from vcar_tf.errors import ArgumentParser, VcarError, cli_main  # noqa: E402
from vcar_tf.fileutil import write_text_atomic  # noqa: E402
from vcar_tf.presets import CARD, presets_dir, preset_card  # noqa: E402
from vcar_tf.reporting import read_report  # noqa: E402

PRECISIONS = ("bf16", "int8")


def outs_of(name, precision):
    """{(split, precision): the folder under runs/ of that evaluation of preset `name`}."""
    return {("val", "fp32"): f"runs/preset-eval-val/{name}", ("val", precision): f"runs/preset-eval-val-{precision}/{name}",
            ("test", "fp32"): f"runs/preset-eval/{name}", ("test", precision): f"runs/preset-eval-{precision}/{name}"}


def delta_psnr_by_sequence(folder):
    """{sequence or "average": ΔPSNR} of an evaluation's report."""
    return {r["sequence"]: float(r["delta_psnr"]) for r in read_report(folder)[1]}


def precision_entry(outs, precision):
    """The card's entry of `precision` from the four evaluations {(split, precision): folder}."""
    entry = {}
    for split in ("val", "test"):
        fp32, low = (delta_psnr_by_sequence(outs[split, p]) for p in ("fp32", precision))
        if fp32.keys() != low.keys():
            raise VcarError(f"{outs[split, 'fp32']} and {outs[split, precision]} hold different sequences")
        worst = max(fp32[name] - low[name] for name in fp32 if name != "average")
        entry[split] = {"delta_psnr_fp32": fp32["average"], f"delta_psnr_{precision}": low["average"],
                        "max_sequence_cost_db": round(worst, 4)}
        entry[f"{split}_cost_db"] = round(fp32["average"] - low["average"], 4)
    return entry


@cli_main
def main(argv=None):
    p = ArgumentParser(prog="preset_precision.py", description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="+")
    p.add_argument("--precision", default="bf16", choices=PRECISIONS)
    p.add_argument("--val-data", default="data/presets")
    p.add_argument("--test-data", default="data/presets-test")
    p.add_argument("--records", default=evaluate_recorded.RECORDS, help="evaluate_recorded.py's --records")
    args = p.parse_args(argv)
    cards = {name: preset_card(name) for name in args.names}  # an unknown name fails before any evaluation
    for name, card in cards.items():
        outs = outs_of(name, args.precision)
        for (split, precision), out in outs.items():
            data = args.val_data if split == "val" else args.test_data
            code = evaluate_recorded.main(["--preset", name, "--data", data, "--precision", precision, "--out", out,
                                           "--records", args.records])
            if code:
                return code
        entry = card[args.precision] = precision_entry(outs, args.precision)
        write_text_atomic(os.path.join(presets_dir(), name, CARD), json.dumps(card, indent=2) + "\n")
        print(f"{name}: {args.precision} costs {entry['val_cost_db']:+.4f} dB on val, "
              f"{entry['test_cost_db']:+.4f} dB on test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
