"""Choose the CRF at which x265's random-access GOP (B-frames, loop filters on) spends about the
bitrate of the presets' compression (x265 LDP, deblocking and SAO on, QP37), on the val split
(issue 15: every choice on val; the test split only reports).

    python scripts/choose_ra_crf.py [--crf 28 29 ... 40] [--out docs/robustness-crf.md]

Prepares the val split both ways under data/robustness-val/val (cached), compares each sequence's
bitrate (its sidecar's bitrate_kbps) and picks the CRF whose RA/LDP bitrate ratio, as a geometric
mean over the val sequences, is nearest 1. Writes a Markdown note with the command, date and commit.
"""

import datetime
import os
import subprocess
import sys

import numpy as np

from vcar_tf.data.codec import CodecSettings
from vcar_tf.data.prepare import find_sources, prepare_dataset
from vcar_tf.errors import ArgumentParser, VcarError, cli_main
from vcar_tf.fileutil import write_text_atomic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bitrates(summary, settings):
    """(kbps, Y-PSNR) lists of one settings' sidecars in a prepare summary, in source order."""
    rows = [c for c in summary["sidecars"] if c["settings"] == settings.to_json()]
    return [c["bitrate_kbps"] for c in rows], [c["psnr_y"] for c in rows]


@cli_main
def main(argv=None):
    p = ArgumentParser(prog="choose_ra_crf.py", description=__doc__.split("\n")[0])
    p.add_argument("--crf", type=int, nargs="+", default=list(range(28, 41)))
    p.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"))
    p.add_argument("--root", default="data/robustness-val/val")
    p.add_argument("--out", default=None, help="write the Markdown note here")
    args = p.parse_args(argv)
    command = " ".join(["python scripts/choose_ra_crf.py", *(sys.argv[1:] if argv is None else argv)])
    ldp = CodecSettings(qp=37, deblock=True, sao=True)
    ras = [CodecSettings(gop="ra", crf=c, deblock=True, sao=True) for c in args.crf]
    sources = find_sources([args.data], "val")
    summary = prepare_dataset(sources, args.root, [ldp, *ras])  # sidecars in source order for each
    ref, ref_psnr = bitrates(summary, ldp)
    lines = ["| encoding | mean bitrate (kbps) | bitrate / LDP's (geometric mean) | mean Y-PSNR (dB) |",
             "|---|---|---|---|",
             f"| {ldp.folder} | {np.mean(ref):.1f} | 1 | {np.mean(ref_psnr):.2f} |"]
    ratios = {}
    for s in ras:
        kbps, psnr = bitrates(summary, s)
        ratios[s.crf] = float(np.exp(np.mean(np.log(np.array(kbps) / np.array(ref)))))
        lines.append(f"| {s.folder} | {np.mean(kbps):.1f} | {ratios[s.crf]:.3f} | {np.mean(psnr):.2f} |")
    best = min(ratios, key=lambda c: abs(np.log(ratios[c])))
    if best in (min(args.crf), max(args.crf)) and len(args.crf) > 1:
        raise VcarError(f"the nearest CRF, {best}, is at the edge of --crf: widen the range")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        "# The x265 random-access CRF of the robustness table, chosen on val",
        "",
        f"Chosen: **CRF {best}** (bitrate {ratios[best]:.3f}× the presets' compression, geometric mean "
        f"over the {len(ref)} val sequences). Made by `{command}` on {when} at commit {commit}: the val split "
        "prepared as the presets were trained (x265 LDP, constant QP37, deblocking and SAO on) and "
        "with x265's own random-access GOP (B-frames) at each CRF, loop filters on; bitrates from "
        "the sidecars (bits × 25 fps / frames). The test split is not read.",
        "", *lines, ""])
    print(text)
    if args.out:
        write_text_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
