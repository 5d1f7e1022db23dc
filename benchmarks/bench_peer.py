"""vcar_tf against its PyTorch peer in one run: STDF-R3 forward, and the deformable conv forward and
forward+backward, vcar_tf's fused op and composite against torchvision's deform_conv2d.

    python benchmarks/bench_peer.py [--rounds 3] [--repeats 3] [--checkpoint RELEASE.safetensors]
        [--out benchmarks/results/peer.md]

Needs torch and torchvision (`pip install -e ".[peer-bench]"`, benchmark-only). The peer is
benchmarks/stdf_pytorch_peer.py; before any timing, one process gives both networks the same
weights (the peer's state_dict imported by vcar_tf.models.stdf.pytorch) and the same window, and
the run stops unless their outputs agree within 1e-4; the same check runs for the deformable conv
alone. Every (implementation, size) then runs in its own process, `--rounds` times, the
implementations alternating within a round so that every one sees the same hour; each cell is
min / median / max over the rounds of the median (deformable conv) or mean (STDF-R3 FPS) of
`--repeats` calls after a warm-up. Both
frameworks use every core this process may run on, in float32, batch 1.
"""

import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_deform import SIZES, child_layer, child_stdf, deform_inputs, spread  # noqa: E402
from machine import arg_parser, peak_rss_mb, publish, rss_mb, run_as_child, run_child, timed, timed_calls  # noqa: E402

PARITY_SIZE = (96, 64)  # width, height
TOLERANCE = 1e-4


def _torch():
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    return torch


def torch_deform_args(torch, x, offset, mask, kernel, bias, grad=False):
    nchw = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy()).requires_grad_(grad)  # noqa: E731
    return (nchw(x), nchw(offset), nchw(mask),
            torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()).requires_grad_(grad),
            torch.from_numpy(bias).requires_grad_(grad))


def child_parity(checkpoint):
    """Max |vcar_tf - peer| of STDF-R3 (same weights: the release's from `checkpoint`, or the peer's
    random initialisation for "-"; same window) and of the deformable conv alone."""
    torch = _torch()
    import numpy as np
    from torchvision.ops import deform_conv2d as torch_deform

    from stdf_pytorch_peer import STDF
    from vcar_tf.models.stdf.pytorch import stdf_from_state_dict
    from vcar_tf.ops.deform_conv import deform_conv2d
    from vcar_tf.weights.state_dict import read_state_dict

    width, height = PARITY_SIZE
    torch.manual_seed(0)
    peer = STDF().eval()
    if checkpoint != "-":
        peer.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in read_state_dict(checkpoint).items()})
    _, model = stdf_from_state_dict({k: v.numpy() for k, v in peer.state_dict().items()})
    window = np.random.default_rng(1).random((1, 7, height, width), dtype=np.float32)
    with torch.inference_mode():
        theirs = peer(torch.from_numpy(window)).numpy()[:, 0]
    ours = np.asarray(model(window[..., None], training=False))[..., 0]
    x, offset, mask, kernel, bias = deform_inputs(width, height)
    t = torch_deform_args(torch, x, offset, mask, kernel, bias)
    with torch.inference_mode():
        layer_theirs = torch_deform(t[0], t[1], t[3], t[4], padding=1, mask=t[2]).numpy().transpose(0, 2, 3, 1)
    layer_ours = np.asarray(deform_conv2d(x, offset, mask, kernel, bias, 7))
    print(json.dumps({"stdf_max_abs": float(np.abs(ours - theirs).max()),
                      "stdf_residual_std": float((theirs - window[:, 3]).std()),
                      "deform_max_abs": float(np.abs(layer_ours - layer_theirs).max()),
                      "deform_output_std": float(layer_theirs.std())}))


def child_torch_layer(width, height, repeats):
    torch = _torch()
    from torchvision.ops import deform_conv2d as torch_deform

    inputs = deform_inputs(width, height)
    base = rss_mb()
    # built once, outside the timing, as the vcar_tf side's tensors are (NCHW copies of 300 MB at 832x480)
    x, offset, mask, weight, bias = torch_deform_args(torch, *inputs)
    grad_args = torch_deform_args(torch, *inputs, grad=True)

    def forward():
        with torch.inference_mode():
            return torch_deform(x, offset, weight, bias, padding=1, mask=mask)

    def forward_backward():
        for a in grad_args:
            a.grad = None
        gx, goffset, gmask, gweight, gbias = grad_args
        torch_deform(gx, goffset, gweight, gbias, padding=1, mask=gmask).sum().backward()
        return [a.grad for a in grad_args]

    # the median of the calls, as bench_deform's child_layer reports the vcar_tf side
    fwd = statistics.median(timed_calls(forward, repeats))
    both = statistics.median(timed_calls(forward_backward, repeats))
    print(json.dumps({"forward_ms": 1000 * fwd, "fwd_bwd_ms": 1000 * both, "peak_growth_mb": peak_rss_mb() - base}))


def child_torch_stdf(width, height, repeats):
    torch = _torch()
    import numpy as np

    from stdf_pytorch_peer import STDF

    peer = STDF().eval()
    x = torch.from_numpy(np.random.default_rng(0).random((1, 7, height, width), dtype=np.float32))

    def run():
        with torch.inference_mode():
            return peer(x).numpy()

    seconds = timed(run, repeats)
    print(json.dumps({"fps": 1 / seconds, "rss_mb": peak_rss_mb()}))


# (label, child kind, leading child args) per measurement; sizes are appended
LAYER = (("vcar_tf fused", "layer", ("fused",)), ("vcar_tf composite", "layer", ("composite",)),
         ("PyTorch torchvision", "torch_layer", ()))
NETWORK = (("vcar_tf fused", "stdf", ("fused",)), ("PyTorch torchvision", "torch_stdf", ()))


def main():
    p = arg_parser(__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--checkpoint", default=None, help="STDF-PyTorch release weights for the parity check "
                   "(default: the peer's random initialisation)")
    args = p.parse_args()
    if run_as_child(args, {"parity": child_parity, "layer": child_layer, "stdf": child_stdf,
                           "torch_layer": child_torch_layer, "torch_stdf": child_torch_stdf}):
        return
    parity = run_child(__file__, "parity", args.checkpoint or "-")
    if "failed" in parity:
        raise SystemExit(f"the parity check failed to run: {parity['failed']}")
    if max(parity["stdf_max_abs"], parity["deform_max_abs"]) > TOLERANCE:
        raise SystemExit(f"vcar_tf and the peer disagree: {parity}")
    results = {}  # (table, label, size) -> list of child results
    for _ in range(args.rounds):
        for table, measurements in (("layer", LAYER), ("network", NETWORK)):
            for w, h in SIZES:
                for label, kind, lead in measurements:
                    r = run_child(__file__, kind, *lead, w, h, args.repeats)
                    if "failed" in r:
                        raise SystemExit(f"{label} {kind} at {w}x{h} failed: {r['failed']}")
                    results.setdefault((table, label, (w, h)), []).append(r)
    med = lambda table, label, size, key: statistics.median(r[key] for r in results[(table, label, size)])  # noqa: E731
    layer = ["| size | implementation | forward ms | forward+backward ms |", "|---|---|---|---|"]
    network = ["| size | implementation | FPS | peak RSS MB (median) |", "|---|---|---|---|"]
    ratios = []
    for w, h in SIZES:
        for label, _, _ in LAYER:
            rs = results[("layer", label, (w, h))]
            layer.append(f"| {w}x{h} | {label} | {spread([r['forward_ms'] for r in rs], '{:.1f}')} | "
                         f"{spread([r['fwd_bwd_ms'] for r in rs], '{:.1f}')} |")
        for label, _, _ in NETWORK:
            rs = results[("network", label, (w, h))]
            network.append(f"| {w}x{h} | {label} | {spread([r['fps'] for r in rs], '{:.3f}')} | "
                           f"{statistics.median(r['rss_mb'] for r in rs):.0f} |")
        fused = lambda key: med("layer", "vcar_tf fused", (w, h), key)  # noqa: E731
        peer = lambda key: med("layer", "PyTorch torchvision", (w, h), key)  # noqa: E731
        ratios.append(f"- {w}x{h}: STDF-R3 vcar_tf / peer FPS = "
                      f"{med('network', 'vcar_tf fused', (w, h), 'fps') / med('network', 'PyTorch torchvision', (w, h), 'fps'):.2f}; "
                      f"deformable conv, peer / vcar_tf fused time = {peer('forward_ms') / fused('forward_ms'):.1f}x "
                      f"forward, {peer('fwd_bwd_ms') / fused('fwd_bwd_ms'):.1f}x forward+backward")
    import torch
    import torchvision

    weights = args.checkpoint or "the peer's random initialisation"
    publish("vcar_tf against the PyTorch peer (STDF-PyTorch's network, torchvision's deform_conv2d)",
            f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads. "
            f"Parity at {PARITY_SIZE[0]}x{PARITY_SIZE[1]}, same weights ({weights}) and inputs: STDF-R3 max |difference| "
            f"{parity['stdf_max_abs']:.1e} (std of the peer's residual over the centre frame {parity['stdf_residual_std']:.1e}), deformable conv "
            f"{parity['deform_max_abs']:.1e} (output std {parity['deform_output_std']:.2f}).\n\n"
            f"Deformable conv (STDF's fusion: 7 -> 64 channels, 3x3, 7 deformable groups), min / median / max "
            f"over {args.rounds} rounds of the median of {args.repeats} calls:\n\n" + "\n".join(layer)
            + f"\n\nSTDF-R3, one frame (7-frame window), min / median / max over {args.rounds} rounds of the "
            f"mean of {args.repeats} calls:\n\n"
            + "\n".join(network) + "\n\nMedians:\n" + "\n".join(ratios) + "\n", args.out)


if __name__ == "__main__":
    main()
