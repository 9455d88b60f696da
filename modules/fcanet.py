"""Frequency Channel Attention (FcaNet's multi-spectral channel attention).

Qin, Zhang, Wu, Li, "FcaNet: Frequency Channel Attention Networks", ICCV 2021,
arXiv:2012.11879.

SE with the global average pool replaced by a multi-spectral 2-D DCT pooling:

* if the map is not ``dct_h x dct_w``, adaptive-average-pool it to that size first (as the
  official code does; in its ImageNet models the sizes always match and this is skipped);
* split the ``C`` channels into ``K`` groups (``K = 16`` for the paper's ``top16``); group ``k``
  is pooled with the DCT basis image of frequency ``(u_k, v_k)``:
  ``Freq_c = sum_{i,j} x_c[i, j] * B(i, u_k, dct_h) * B(j, v_k, dct_w)`` with
  ``B(t, f, L) = cos(pi f (t + 1/2) / L) / sqrt(L)``, times ``sqrt(2)`` when ``f > 0``
  (orthonormal DCT-II; frequency (0, 0) is ``sqrt(HW)`` times the mean);
* ``y = x * sigmoid(W2 ReLU(W1 Freq))`` with ``W1: C -> C/16``, ``W2: C/16 -> C``, no bias (as
  the official code).

Frequencies: the official tables of the 7x7 grid, ranked by the paper's single-frequency
ablation (``top``), lowest-first (``low``) or worst-first (``bot``); ``freq_sel_method`` is one of
``top|low|bot`` followed by 1, 2, 4, 8, 16 or 32. On a larger DCT grid each index is scaled
by ``dct // 7`` (the official mapping: (2, 2) on 14x14 is (1, 1) on 7x7). ``channels`` must be
divisible by the number of frequencies.

Grid size: the official ResNet (cfzd/FcaNet ``model/fcanet.py``, ``c2wh = {64: 56, 128: 28,
256: 14, 512: 7}``) sizes the grid to each stage's map at 224 px, 56/28/14/7, so no pooling
happens there; :func:`modules.build_model` passes those sizes per stage (the entry's
``stage_kwargs``) in the ImageNet ResNets. The constructor default ``dct_h = dct_w = 7`` is the
official model's choice only in stage 4; on a larger map it first average-pools to 7x7, which
is a different gate (a different function of ``x``) from the official one in stages 1-3.

The DCT basis is a non-persistent buffer: it is a fixed function of the constructor
arguments, rebuilt on construction, so state dicts hold only the learned FC weights. A state
dict from the official code loads with ``strict=False`` (its ``dct_layer.weight`` ignored)
into modules built with the same grid size as the official layer, i.e. the per-stage sizes
above; with the 7x7 default it loads but computes a different gate in stages 1-3.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import AttentionModule, ModuleFactory, Shape, check_divisible, check_positive_int, numel
from ._registry import register_attention

__all__ = ["FrequencyChannelAttention", "frequency_indices", "dct_basis"]

# (u, v) on the 7x7 grid, 32 of each ordering (FcaNet's supplementary material / official code).
# fmt: off
_FREQ_TABLES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "top": (
        (0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1),
        (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3),
    ),
    "low": (
        (0, 0, 1, 1, 0, 2, 2, 1, 2, 0, 3, 4, 0, 1, 3, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4),
        (0, 1, 0, 1, 2, 0, 1, 2, 2, 3, 0, 0, 4, 3, 1, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3),
    ),
    "bot": (
        (6, 1, 3, 3, 2, 4, 1, 2, 4, 4, 5, 1, 4, 6, 2, 5, 6, 1, 6, 2, 2, 4, 3, 3, 5, 5, 6, 2, 5, 5, 3, 6),
        (6, 4, 4, 6, 6, 3, 1, 4, 4, 5, 6, 5, 2, 2, 5, 1, 4, 3, 5, 0, 3, 1, 1, 2, 4, 2, 1, 1, 5, 3, 3, 3),
    ),
}
# fmt: on
_FREQ_COUNTS = (1, 2, 4, 8, 16, 32)


def frequency_indices(method: str) -> tuple[list[int], list[int]]:
    """``(u, v)`` lists on the 7x7 grid for ``method`` (``"top16"``, ``"low4"``, ``"bot32"``...)."""
    kind, count = method[:3], method[3:]
    if kind not in _FREQ_TABLES or not count.isdigit() or int(count) not in _FREQ_COUNTS:
        raise ValueError(
            f"freq_sel_method must be 'top', 'low' or 'bot' followed by one of {_FREQ_COUNTS} "
            f"(e.g. 'top16'), got {method!r}"
        )
    us, vs = _FREQ_TABLES[kind]
    return list(us[: int(count)]), list(vs[: int(count)])


def _dct_1d(length: int, freq: int) -> Tensor:
    """Orthonormal DCT-II basis vector of ``freq`` over ``length`` points (float64)."""
    pos = torch.arange(length, dtype=torch.float64)
    basis = torch.cos(math.pi * freq * (pos + 0.5) / length) / math.sqrt(length)
    return basis * math.sqrt(2.0) if freq > 0 else basis


def dct_basis(channels: int, dct_h: int, dct_w: int, us: list[int], vs: list[int]) -> Tensor:
    """``(channels, dct_h, dct_w)`` float64 filter: group ``k`` of ``channels / len(us)``
    consecutive channels holds the 2-D basis image of frequency ``(us[k], vs[k])``."""
    per_group = channels // len(us)
    images = [
        torch.outer(_dct_1d(dct_h, u), _dct_1d(dct_w, v)) for u, v in zip(us, vs, strict=True)
    ]
    return torch.stack(images).repeat_interleave(per_group, dim=0)


class FrequencyChannelAttention(AttentionModule):
    """FcaNet multi-spectral channel attention (arXiv:2012.11879).

    Args:
        channels: input (and output) channels; a multiple of the number of frequencies (16).
        reduction: the FC bottleneck ratio ``r`` (hidden width ``channels // r``).
        dct_h: DCT grid height (>= 7).
        dct_w: DCT grid width (>= 7).
        freq_sel_method: frequency selection (``top16``: the paper's).
        act_layer: activation between the two FCs.
        gate_layer: the gate's squashing function.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 16,
        dct_h: int = 7,
        dct_w: int = 7,
        freq_sel_method: str = "top16",
        act_layer: ModuleFactory = nn.ReLU,
        gate_layer: ModuleFactory = nn.Sigmoid,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        check_positive_int("reduction", reduction)
        for name, size in (("dct_h", dct_h), ("dct_w", dct_w)):
            check_positive_int(name, size)
            if size < 7:
                raise ValueError(
                    f"{name} must be >= 7 (the frequency tables index a 7x7 grid), got {size}"
                )
        us, vs = frequency_indices(freq_sel_method)
        self.num_freq = len(us)
        check_divisible(
            "channels", channels, self.num_freq, f"the number of frequencies of {freq_sel_method!r}"
        )
        self.hidden = channels // reduction
        if self.hidden < 1:
            raise ValueError(
                f"reduction={reduction} leaves no hidden units for channels={channels}; use reduction <= channels"
            )
        self.dct_h, self.dct_w = dct_h, dct_w
        self.freq_sel_method = freq_sel_method
        us = [u * (dct_h // 7) for u in us]
        vs = [v * (dct_w // 7) for v in vs]
        factory = {"device": device, "dtype": dtype}
        basis = dct_basis(channels, dct_h, dct_w, us, vs)
        self.register_buffer(
            "dct_weight",
            basis.to(device=device, dtype=dtype or torch.get_default_dtype()),
            persistent=False,
        )
        self.fc1 = nn.Linear(channels, self.hidden, bias=False, **factory)
        self.act = act_layer()
        self.fc2 = nn.Linear(self.hidden, channels, bias=False, **factory)
        self.gate = gate_layer()

    def _resized(self, h: int, w: int) -> bool:
        return (h, w) != (self.dct_h, self.dct_w)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        n, c, h, w = x.shape
        pooled = F.adaptive_avg_pool2d(x, (self.dct_h, self.dct_w)) if self._resized(h, w) else x
        spectrum = (pooled * self.dct_weight).sum((2, 3))  # (N, C)
        gate = self.gate(self.fc2(self.act(self.fc1(spectrum))))
        return x * gate.view(n, c, 1, 1)

    def formula_params(self) -> int:
        return 2 * self.channels * self.hidden

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, h, w = input_shape
        full = numel(input_shape)
        resize = full if self._resized(h, w) else 0  # adaptive average pool reads every element
        grid = n * c * self.dct_h * self.dct_w
        spectrum = 2 * grid  # multiply by the basis, sum over the grid
        fcs = 2 * n * c * self.hidden
        act_gate = n * self.hidden + n * c
        scale = full
        return resize + spectrum + fcs + act_gate + scale

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, dct=({self.dct_h}, {self.dct_w}), "
            f"freq_sel_method={self.freq_sel_method!r}"
        )


register_attention(
    "fca",
    FrequencyChannelAttention,
    family="fcanet",
    paper="FcaNet: Frequency Channel Attention Networks",
    arxiv="2012.11879",
    kind="gate",
    stage_kwargs={
        1: {"dct_h": 56, "dct_w": 56},
        2: {"dct_h": 28, "dct_w": 28},
        3: {"dct_h": 14, "dct_w": 14},
        4: {"dct_h": 7, "dct_w": 7},
    },
    official_source="https://github.com/cfzd/FcaNet model/fcanet.py (after bn3 of every block; DCT grid 56/28/14/7 "
    "by stage)",
    description=(
        "Multi-spectral channel attention: 16 DCT frequencies (top16) on the stage's map size "
        "(56/28/14/7 in ImageNet ResNets; 7x7 grid, adaptive-avg-pooled first, elsewhere) -> FC C/16 -> ReLU -> FC C (no bias) -> sigmoid -> scale"
    ),
)
