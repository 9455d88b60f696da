"""Bottleneck Attention Module (BAM).

Park, Woo, Lee, Kweon, "BAM: Bottleneck Attention Module", BMVC 2018, arXiv:1807.06514.

Two parallel branches, summed before one sigmoid, and a residual form::

    Mc = fc2(ReLU(BN(fc1(GAP(x)))))                      (N, C, 1, 1)   fc: C -> C/r -> C, bias
    Ms = conv1x1_{h->1}(RBN(dconv3x3(RBN(dconv3x3(RBN(conv1x1_{C->h}(x)))))))   (N, 1, H, W)
    M  = sigmoid(Mc + Ms)                                (N, C, H, W), broadcast
    y  = x + x * M

with ``h = C // r``, ``r = 16``, ``RBN = ReLU(BN(.))``, and the two 3x3 convs dilated by
``d = 4`` (padding 4, the map size is kept). Every conv / fc has a bias, as in the official
code (``Jongchan/attention-module``, ``MODELS/bam.py``).

The residual ``y = x + x * M = (1 + M) * x`` IS the paper's form (its Eq. 1,
``F' = F + F (x) M(F)``), not an addition of ours: the module is meant to sit alone between
stages, where no block shortcut surrounds it. The paper places one BAM at each bottleneck of the
network, where the feature map is downsampled, i.e. after stages 1-3 of an ImageNet ResNet and
none after the last; it is registered with placement ``transition`` (the official
``MODELS/model_resnet.py`` adds ``bam1..bam3`` after ``layer1..layer3``).

Deliberate differences:

* From the official code: the code combines the branches as ``sigmoid(Mc * Ms)``; we follow the
  paper's ``sigmoid(Mc + Ms)``. The code pools with ``avg_pool2d(x, H)``, which assumes square
  maps; we use the mean over ``H x W``.
* From the paper's equations: the paper writes ``Mc = BN(MLP(AvgPool(x)))`` and
  ``Ms = BN(f3(f2(f1(f0(x)))))``, i.e. one BN at the *output* of each branch "to adjust the
  scale" of the two; the official code has no output BN and instead puts BN + ReLU after every
  hidden layer (what we build by default). ``output_norm=True`` adds the paper's two output BNs
  (over the C channel logits and over the one spatial map) on top.
* The biases of the layers followed by a BN are redundant (in training BN subtracts the batch
  mean, so their gradient is exactly zero); they are kept because the official code has them and
  they belong to its parameter count. ResNet-50 with one BAM after each of stages 1-3
  (256/512/1024 channels) gets 358,067 parameters here: 25.92M in all.
* Hidden BNs of the channel branch see ``(N, C/r)`` vectors: in training mode with a batch of
  one BatchNorm cannot normalise them (PyTorch raises), as in the official code.

Reduced width: ``C // r`` floored, at least ``min_channels`` (default 1).

Costs (``modules/_base.py``, ``h = C // r``, ``HW = H * W``). Channel branch: ``N C HW`` (pool) +
``N C h`` (fc1) + ``2 N h`` (BN) + ``N h`` (ReLU) + ``N h C`` (fc2). Spatial branch:
``N h HW C`` (reduce) + 2 x ``N h HW h 9`` (dilated convs) + 3 x ``3 N h HW`` (BN + ReLU after
each of the three) + ``N HW h`` (final 1x1). Combination: ``N C HW`` each for the broadcast add,
the sigmoid, the multiply and the residual add. ``output_norm`` adds ``2 N C + 2 N HW``.
The cost formulas assume the default affine ``BatchNorm2d`` for ``norm_layer``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import (
    AttentionModule,
    ModuleFactory,
    Shape,
    check_positive_int,
    numel,
    reduced_channels,
)
from ._registry import register_attention

__all__ = ["Bam"]


class Bam(AttentionModule):
    """BAM (arXiv:1807.06514): ``y = x + x * sigmoid(Mc(x) + Ms(x))``.

    Args:
        channels: input (and output) channels.
        reduction: the paper's ``r`` for both branches; hidden width ``channels // r``.
        dilation: dilation ``d`` of the two 3x3 convs of the spatial branch.
        min_channels: smallest hidden width.
        output_norm: add the paper's BN at the output of each branch (see the module docstring).
        act_layer: activation after each hidden BN.
        norm_layer: the BN of both branches (built as ``norm_layer(num_channels)``).
        gate_layer: squashing function of the combined map.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: float = 16,
        dilation: int = 4,
        min_channels: int = 1,
        output_norm: bool = False,
        act_layer: ModuleFactory = nn.ReLU,
        norm_layer: ModuleFactory = nn.BatchNorm2d,
        gate_layer: ModuleFactory = nn.Sigmoid,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.dilation = check_positive_int("dilation", dilation)
        self.hidden = h = reduced_channels(channels, reduction, min_channels)
        self.output_norm = bool(output_norm)
        factory = {"device": device, "dtype": dtype}

        self.channel_gate = nn.Sequential(
            nn.Conv2d(channels, h, 1, bias=True, **factory),
            norm_layer(h, **factory),
            act_layer(),
            nn.Conv2d(h, channels, 1, bias=True, **factory),
        )
        spatial: list[nn.Module] = [
            nn.Conv2d(channels, h, 1, bias=True, **factory),
            norm_layer(h, **factory),
            act_layer(),
        ]
        for _ in range(2):
            spatial += [
                nn.Conv2d(h, h, 3, padding=dilation, dilation=dilation, bias=True, **factory),
                norm_layer(h, **factory),
                act_layer(),
            ]
        spatial.append(nn.Conv2d(h, 1, 1, bias=True, **factory))
        if self.output_norm:
            self.channel_gate.append(norm_layer(channels, **factory))
            spatial.append(norm_layer(1, **factory))
        self.spatial_gate = nn.Sequential(*spatial)
        self.gate = gate_layer()

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        channel_logits = self.channel_gate(x.mean((2, 3), keepdim=True))  # (N, C, 1, 1)
        spatial_logits = self.spatial_gate(x)  # (N, 1, H, W)
        attention = self.gate(channel_logits + spatial_logits)  # (N, C, H, W)
        return torch.addcmul(x, x, attention)  # x + x * attention

    def formula_params(self) -> int:
        c, h = self.channels, self.hidden
        channel = (c * h + h) + 2 * h + (h * c + c)
        spatial = (c * h + h) + 2 * h + 2 * (h * h * 9 + h + 2 * h) + (h + 1)
        out_norm = 2 * c + 2 if self.output_norm else 0
        return channel + spatial + out_norm

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, hh, ww = input_shape
        h, hw, full = self.hidden, hh * ww, numel(input_shape)
        channel = full + n * c * h + 2 * n * h + n * h + n * h * c
        spatial = (
            n * h * hw * c  # 1x1 reduce
            + 2 * n * h * hw * h * 9  # two dilated 3x3
            + 3 * (2 + 1) * n * h * hw  # BN + ReLU after each
            + n * hw * h  # 1x1 to one map
        )
        out_norm = 2 * n * c + 2 * n * hw if self.output_norm else 0
        combine = 4 * full  # broadcast add, sigmoid, multiply, residual add
        return channel + spatial + out_norm + combine


register_attention(
    "bam",
    Bam,
    family="bam",
    paper="BAM: Bottleneck Attention Module",
    arxiv="1807.06514",
    kind="gate",
    placement="transition",
    official_source="https://github.com/Jongchan/attention-module MODELS/bam.py, "
    "MODELS/model_resnet.py (bam1, bam2, bam3 after layer1, layer2, layer3)",
    placement_note=(
        "the paper puts one BAM at each bottleneck where the map is downsampled (end of a stage), "
        "not in every block (ImageNet ResNets: after stages 1-3, none after the last); its residual "
        "form y = x + x*M is meant to stand alone there"
    ),
    description="x + x*sigmoid(Mc + Ms): channel MLP (C/16, BN+ReLU) + spatial 1x1 / 2x dilated 3x3 (d=4) / 1x1",
)
