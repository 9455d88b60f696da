"""Global Context (GC) block.

Cao, Xu, Lin, Wei, Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and
Beyond", arXiv:1904.11492. With ``W_k`` a 1x1 conv C -> 1 (bias)::

    alpha = softmax_HW(W_k x)                          # (N, 1, H*W)
    ctx   = sum_j alpha_j x_j                          # (N, C, 1, 1) attention pooling
    t     = W_v2 ReLU(LN(W_v1 ctx))                    # 1x1 convs C -> C/r -> C (bias),
                                                       # LayerNorm over the C/r channels
    add:    y = x + t                                  # ``gc_add`` (the paper's default)
    scale:  y = x * sigmoid(t)                         # ``gc_scale``

with ``r = 16`` (the paper's ratio 1/16; hidden width ``C // 16``, at least 1).

Placement (``build_model``'s default): after the last BN of every block of stages 2-4 only
(c3-c5), the official ``stage_with_gcb=(False, True, True, True)`` of xvjiarui/GCNet's configs
(``mmdet/models/backbones/resnet.py``); that is the network of the paper's 28.08M
GC-ResNet-50 (r = 16). ``placement="block"`` adds stage 1 as well.

Initialisation follows the official code: ``W_k`` Kaiming-normal (fan-in, biases zero) and the
last conv of the transform zero (so ``gc_add`` starts as the identity and ``gc_scale`` as a
0.5 gate).

Differences from timm's ``GlobalContext``: timm's defaults are ``rd_ratio = 1/8`` and
``fuse_scale`` (not add); its LayerNorm has ``eps = 1e-6`` where the official
``nn.LayerNorm([C/r, 1, 1])`` and ours use PyTorch's ``1e-5``; timm zero-initialises only the
add branch's last conv. With ``rd_channels = C // 16`` and the eps set to ours the two compute
the same function (the tests copy weights and check it). Our LayerNorm's weight has shape
``(C/r,)`` like timm's (the official one is ``(C/r, 1, 1)``; same maths on a 1x1 map).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import (
    AttentionModule,
    ModuleFactory,
    Shape,
    check_positive_int,
    conv_macs,
    numel,
    reduced_channels,
)
from ._registry import BlockSelector, register_attention

__all__ = ["GlobalContext", "ChannelLayerNorm"]

Fusion = Literal["add", "scale"]


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map (``nn.LayerNorm([C, 1, 1])`` on the
    1x1 context map of GCNet)."""

    def __init__(self, num_channels: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=True, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        normed = F.layer_norm(
            x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps
        )
        return normed.permute(0, 3, 1, 2)


class GlobalContext(AttentionModule):
    """GC block (arXiv:1904.11492) with ``fusion="add"`` or ``"scale"``.

    Args:
        channels: input (and output) channels.
        fusion: ``"add"`` (``y = x + t``, the paper's default) or ``"scale"``
            (``y = x * sigmoid(t)``).
        reduction: ``hidden = max(min_channels, channels // reduction)`` (r = 16).
        min_channels: smallest hidden width.
        act_layer: activation in the transform.
        norm_layer: norm in the transform (5 MACs per element, affine); ``None`` for none.
        gate_layer: the gate of ``fusion="scale"``.
    """

    def __init__(
        self,
        channels: int,
        *,
        fusion: Fusion = "add",
        reduction: int = 16,
        min_channels: int = 1,
        act_layer: ModuleFactory = nn.ReLU,
        norm_layer: ModuleFactory | None = ChannelLayerNorm,
        gate_layer: ModuleFactory = nn.Sigmoid,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if fusion not in ("add", "scale"):
            raise ValueError(f"fusion must be 'add' or 'scale', got {fusion!r}")
        check_positive_int("reduction", reduction)
        self.fusion = fusion
        self.hidden = reduced_channels(channels, reduction, min_channels)
        self.has_norm = norm_layer is not None
        factory = {"device": device, "dtype": dtype}
        self.conv_attn = nn.Conv2d(channels, 1, 1, bias=True, **factory)
        self.fc1 = nn.Conv2d(channels, self.hidden, 1, bias=True, **factory)
        self.norm = norm_layer(self.hidden, **factory) if norm_layer is not None else nn.Identity()
        self.act = act_layer()
        self.fc2 = nn.Conv2d(self.hidden, channels, 1, bias=True, **factory)
        self.gate = gate_layer() if fusion == "scale" else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official GCNet initialisation: Kaiming-normal attention conv, zero last conv."""
        nn.init.kaiming_normal_(self.conv_attn.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_attn.bias)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        n, c, h, w = x.shape
        weights = self.conv_attn(x).view(n, 1, h * w).softmax(dim=2)  # (N, 1, HW)
        context = torch.bmm(x.reshape(n, c, h * w), weights.transpose(1, 2))  # (N, C, 1)
        transform = self.fc2(self.act(self.norm(self.fc1(context.view(n, c, 1, 1)))))
        if self.fusion == "add":
            return x + transform
        return x * self.gate(transform)

    def formula_params(self) -> int:
        c, r = self.channels, self.hidden
        attn = c + 1
        transform = c * r + r + (2 * r if self.has_norm else 0) + r * c + c
        return attn + transform

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, h, w = input_shape
        r, hw = self.hidden, h * w
        attn = conv_macs(n, c, 1, (h, w)) + n * hw  # logits + softmax
        context = n * c * hw  # bmm (N, C, HW) x (N, HW, 1)
        transform = 2 * n * c * r + (5 * n * r if self.has_norm else 0) + n * r
        fuse = numel(input_shape) + (n * c if self.fusion == "scale" else 0)
        return attn + context + transform + fuse


_OFFICIAL_BLOCKS = BlockSelector(stages=(2, 3, 4))
_OFFICIAL_SOURCE = (
    "https://github.com/xvjiarui/GCNet configs (stage_with_gcb=(False, True, True, True): every block of c3-c5, "
    "after the last BN)"
)

register_attention(
    "gc_add",
    GlobalContext,
    family="global_context",
    paper="GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
    arxiv="1904.11492",
    kind="gate",
    blocks=_OFFICIAL_BLOCKS,
    official_source=_OFFICIAL_SOURCE,
    description="softmax attention pooling -> 1x1 C->C/16 -> LN -> ReLU -> 1x1 -> C; y = x + t",
    fusion="add",
)
register_attention(
    "gc_scale",
    GlobalContext,
    family="global_context",
    paper="GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
    arxiv="1904.11492",
    kind="gate",
    blocks=_OFFICIAL_BLOCKS,
    official_source=_OFFICIAL_SOURCE,
    description="softmax attention pooling -> 1x1 C->C/16 -> LN -> ReLU -> 1x1 -> C; "
    "y = x * sigmoid(t)",
    fusion="scale",
)
