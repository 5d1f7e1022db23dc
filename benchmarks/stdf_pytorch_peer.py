"""The PyTorch peer of stdf_r3: STDF-PyTorch's network (Deng et al., AAAI 2020, as the STDF-PyTorch
project describes it), rebuilt for benchmarks with torchvision's deform_conv2d. Benchmark-only:
torch is never a dependency of vcar_tf (`pip install -e ".[peer-bench]"`).

Its state_dict keys are the release's (ffnet.*, qenet.*), so vcar_tf.models.stdf.pytorch imports it
tensor for tensor: bench_peer.py checks that both networks give the same output before timing them.
"""

import torch
from torch import nn
from torchvision.ops import deform_conv2d


def _conv(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class AlignFuse(nn.Module):
    """ffnet: a U-Net predicts offsets and masks, then one modulated deformable conv fuses the window."""

    def __init__(self, frames=7, nf=32, nb=3, out_nc=64):
        super().__init__()
        self.frames, self.nb = frames, nb
        self.in_conv = nn.Sequential(_conv(frames, nf), nn.ReLU())
        for i in range(1, nb):
            setattr(self, f"dn_conv{i}", nn.Sequential(_conv(nf, nf, 2), nn.ReLU(), _conv(nf, nf), nn.ReLU()))
            setattr(self, f"up_conv{i}", nn.Sequential(_conv(2 * nf, nf), nn.ReLU(),
                                                       nn.ConvTranspose2d(nf, nf, 4, 2, 1), nn.ReLU()))
        self.tr_conv = nn.Sequential(_conv(nf, nf, 2), nn.ReLU(), _conv(nf, nf), nn.ReLU(),
                                     nn.ConvTranspose2d(nf, nf, 4, 2, 1), nn.ReLU())
        self.out_conv = nn.Sequential(_conv(nf, nf), nn.ReLU())
        self.offset_mask = _conv(nf, frames * 3 * 9)
        self.deform_conv = nn.Conv2d(frames, out_nc, 3, padding=1)  # its weight and bias; applied by deform_conv2d

    def forward(self, x):
        skips = [self.in_conv(x)]
        for i in range(1, self.nb):
            skips.append(getattr(self, f"dn_conv{i}")(skips[-1]))
        out = self.tr_conv(skips[-1])
        for i in range(self.nb - 1, 0, -1):
            out = getattr(self, f"up_conv{i}")(torch.cat([out, skips[i]], 1))
        off_msk = self.offset_mask(self.out_conv(out))
        n = self.frames * 2 * 9
        fused = deform_conv2d(x, off_msk[:, :n], self.deform_conv.weight, self.deform_conv.bias, padding=1,
                              mask=torch.sigmoid(off_msk[:, n:]))
        return torch.relu(fused)


class Enhance(nn.Module):
    """qenet: a plain CNN of nb convs predicting the residual."""

    def __init__(self, in_nc=64, nf=48, nb=8):
        super().__init__()
        self.in_conv = nn.Sequential(_conv(in_nc, nf), nn.ReLU())
        hidden = []
        for _ in range(nb - 2):
            hidden += [_conv(nf, nf), nn.ReLU()]
        self.hid_conv = nn.Sequential(*hidden)
        self.out_conv = _conv(nf, 1)

    def forward(self, x):
        return self.out_conv(self.hid_conv(self.in_conv(x)))


class STDF(nn.Module):
    """(B, 2R+1, H, W) window of Y planes -> (B, 1, H, W) enhanced centre frame."""

    def __init__(self, radius=3, nf=32, nb=3, nf_qe=48, nb_qe=8):
        super().__init__()
        self.radius = radius
        self.ffnet = AlignFuse(2 * radius + 1, nf, nb)
        self.qenet = Enhance(64, nf_qe, nb_qe)

    def forward(self, x):
        return self.qenet(self.ffnet(x)) + x[:, self.radius:self.radius + 1]
