"""List the model registry with parameter counts: python -m vcar_tf.models."""

import sys

from vcar_tf.errors import ArgumentParser, cli_main
from vcar_tf.models import summary
from vcar_tf.precision import val_cost
from vcar_tf.presets import preset_card, preset_names


def test_text(card):
    test = card.get("test")
    if not test:
        return "test not measured"
    return f"test ΔPSNR {test['delta_psnr']:+.3f} dB  ΔSSIM {test['delta_ssim_x100']:+.3f}x1e-2"


def cost_text(card, precision):
    cost = val_cost(card, precision)
    return f"{precision} not measured" if cost is None else f"{precision} costs {cost:+.3f} dB on val"


@cli_main
def main(argv=None):
    p = ArgumentParser(prog="python -m vcar_tf.models", description=__doc__.split("\n")[0])
    p.add_argument("--presets", action="store_true", help="list the trained presets instead")
    args = p.parse_args(argv)
    if args.presets:
        names = preset_names()
        for name in names:
            card = preset_card(name)
            print(f"{name:28s} {card['model']:12s} QP{card['qp']}  {test_text(card)}  {cost_text(card, 'bf16')}  {cost_text(card, 'int8')}")
        if not names:
            print("no preset ships with this version")
        return 0
    for n, r, params, d in summary():
        print(f"{n:12s} R={r}  {params:>10,d} params  {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
