"""GSoP: global second-order pooling channel attention.

Gao, Xie, Wang, Li, "Global Second-order Pooling Convolutional Networks", CVPR 2019,
arXiv:1811.12006. Channel mode of the official code (``Bottleneck.chan_att``), with
``d = 128`` and ``M = H' * W'`` positions after the reducing conv::

    r   = ReLU(BN(W_r relu(x)))                        # 1x1 conv C -> d (bias)
    S   = (r - mean_M(r)) (r - mean_M(r))^T / M        # (N, d, d) covariance
    v   = RowConv(BN(S))                               # grouped conv d -> 4d, kernel (d, 1),
                                                       # groups d (bias): one 4-output conv
                                                       # per covariance row
    y   = x * sigmoid(W_f v)                           # 1x1 conv 4d -> C (bias)

The gate multiplies the block's *input* ``x`` (C channels). A blog implementation of the GSoP block multiplied the
d-channel reduced map by a C-channel gate, which only broadcasts when ``C == d``; here the
shapes always agree.

Activation choices, following the official channel mode:

* the branch starts with a non-inplace ReLU of the input (``relu_normal``) -- the gate sees
  ``relu(x)`` but multiplies ``x``; ``input_act_layer=None`` drops it;
* ReLU after the reducing conv's BN;
* **no** activation between the row-wise conv and ``W_f`` (the official position-attention
  mode has a ReLU there; the channel mode, which GSoP-Net1 uses, does not).

Other deliberate choices:

* ``d = min(dim, channels)``: for fewer than 128 input channels a 128-wide reduction would
  expand, not reduce, and the covariance of a C-channel map has rank at most C anyway; so
  channels 16 and 64 build a d = 16 / 64 block. The official code only meets C >= 256.
* The official code gives the reducing conv stride 2 in ResNet-50's first stage (planes 64)
  to cut the covariance cost at 56x56; the module cannot know its stage, so ``dr_stride``
  defaults to 1 and :func:`modules.build_model` passes 2 in stage 1 (the entry's
  ``stage_kwargs``).
* The covariance is computed as centring + one ``bmm`` (the official ``I_hat`` matrix form
  does the same maths with an extra ``M x M`` product), in the autocast dtype
  (:func:`covariance` gives the measured bf16 error), with its gradient written out.
* ``fc``, a 1x1 conv on the ``1 x 1`` map of row outputs, runs as the matmul it is
  (``F.linear`` on its weight viewed as ``(C, 4d)``; the parameter keeps the conv's shape):
  on a CPU the conv's backward on a ``1 x 1`` map costs more than the matmul's.
* The row BN and row-wise conv compute the official function on the covariance rows gathered
  row-major, the conv as one batched matmul (:meth:`GSoP.row_wise`); the parameters keep the
  grouped conv's shapes, so official weights load. ``benchmarks/gsop_profile.py`` profiles a
  training step of the small ResNet both ways.

Placement and network (``build_model``'s default): GSoP-Net1 of the official code
(ZilinGao/Global-Second-order-Pooling-Convolutional-Networks ``torchvision/models/resnet.py``
and ``main.py``): one block inside the last Bottleneck of each of the 4 stages, on the residual
branch after ``bn3``, before the add (the gate multiplies ``bn3``'s output, not the block's
output); the stage-1 block reduces with stride 2; ``layer4`` has stride 1, so the head is
14 x 14 at 224 px (the official ``AvgPool2d(14)``; torchvision's adaptive pool computes the
same there). That stride change is what makes GSoP-Net1 cost about 6.2 GMACs, against 4.1
for ResNet-50. ``placement="block"`` puts one in every block of torchvision's unchanged
ResNet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ._base import AttentionModule, ModuleFactory, Shape, check_positive_int, conv_macs, numel
from ._registry import BlockSelector, register_attention

__all__ = ["GSoP"]


def covariance(features: Tensor) -> Tensor:
    """The ``(N, d, d)`` covariance of an ``(N, d, H, W)`` map over its ``M = H * W`` positions:
    centring, then one ``bmm`` divided by ``M``.

    A channels-last map is read as ``(N, M, d)`` and an NCHW one as ``(N, d, M)``, both views
    without a copy, so the gradient reaches ``features`` in its own layout: a gradient in the
    other layout sends the ReLU and BatchNorm backward before it to their strided kernels,
    about 10x slower on a CPU.

    The gradient is written out (:class:`_Covariance`): for ``S = C^T C / M`` with ``C`` the
    centred ``(N, M, d)`` map and ``G = dL/dS``, ``dL/dC = (C G + C G^T) / M`` (two products
    accumulated in one buffer, the ``1/M`` folded into them: ``baddbmm``'s ``alpha``), and since the columns of ``C``
    sum to zero this is already centred, so it is also ``dL/dfeatures``: autograd's chain of
    the same function adds a full-size sum of the two products, a division and the mean's
    backward, each a pass over the ``(N, M, d)`` map. Without a gradient to compute, or under
    ``torch.jit.trace`` (ONNX export, fvcore), the same forward runs as plain ops, which
    tracers and op counters read. The mean is taken as a sum over ``M``: ``mean`` of a bf16
    tensor on a CPU first copies it to fp32.

    Under bf16 autocast the ``bmm`` runs in bf16 with fp32 accumulation; its error against an
    fp64 covariance of the same inputs is the rounding of the bf16 result (relative 0.20-0.26%
    at d = 64/128 and M = 16 to 3136, not growing with M), so it is not recomputed in fp32, which
    cost 15% more training time in the small ResNet (``tests/test_gsop_fast.py`` checks the
    bound)."""
    n, d, h, w = features.shape
    if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
        flat, positions_dim = features.permute(0, 2, 3, 1).reshape(n, h * w, d), 1  # (N, M, d), a view
    else:
        flat, positions_dim = features.flatten(2), 2  # (N, d, M)
    if torch.is_grad_enabled() and flat.requires_grad and not torch.jit.is_tracing():
        return _Covariance.apply(flat, positions_dim)
    return _centred_covariance(flat, positions_dim)[1]  # what tracers and op counters can read


def _centred_covariance(flat: Tensor, positions_dim: int) -> tuple[Tensor, Tensor]:
    """The centred ``flat`` and its covariance over the positions axis ``positions_dim`` (1:
    ``(N, M, d)``, 2: ``(N, d, M)``)."""
    positions = flat.shape[positions_dim]
    centred = flat - flat.sum(positions_dim, keepdim=True) / positions  # bf16 mean() upcasts a copy
    by_row = centred.transpose(1, 2) if positions_dim == 1 else centred  # (N, d, M)
    return centred, torch.bmm(by_row, by_row.transpose(1, 2)).div_(positions)


class _Covariance(torch.autograd.Function):
    """``cov(X)`` of a batch of ``(M, d)`` (``positions_dim=1``) or ``(d, M)``
    (``positions_dim=2``) matrices, centred over the M positions, with its gradient written out
    (see :func:`covariance`). The products follow autocast; the centring runs in the input's
    dtype. The backward is not itself differentiable: a second-order gradient through it
    raises instead of dropping terms."""

    @staticmethod
    def forward(ctx, flat: Tensor, positions_dim: int) -> Tensor:
        centred, cov = _centred_covariance(flat, positions_dim)
        ctx.save_for_backward(centred)
        ctx.positions_dim = positions_dim
        return cov

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_cov: Tensor) -> tuple[Tensor, None]:
        (centred,) = ctx.saved_tensors
        scale = 1 / centred.shape[ctx.positions_dim]
        grad_cov = grad_cov.to(centred.dtype).contiguous()  # else each product below copies it
        unused = centred.new_zeros(1, 1, 1)
        if ctx.positions_dim == 1:  # C G / M + C G^T / M, (N, M, d)
            grad = torch.baddbmm(unused, centred, grad_cov, beta=0, alpha=scale)
            return grad.baddbmm_(centred, grad_cov.transpose(1, 2), alpha=scale), None
        grad = torch.baddbmm(unused, grad_cov, centred, beta=0, alpha=scale)  # G C / M + G^T C / M
        return grad.baddbmm_(grad_cov.transpose(1, 2), centred, alpha=scale), None


class GSoP(AttentionModule):
    """GSoP channel attention (arXiv:1811.12006, official channel mode).

    Args:
        channels: input (and output) channels.
        dim: width ``d`` of the covariance (128 in the paper); the block uses
            ``min(dim, channels)``.
        row_expansion: outputs per covariance row in the row-wise conv (4 in the paper).
        dr_stride: stride of the reducing 1x1 conv (the official code uses 2 in ResNet-50's
            first stage).
        input_act_layer: activation applied to the branch input; ``None`` for none.
        act_layer: activation after the reducing conv's norm.
        norm_layer: norm after the reducing conv and on the covariance rows.
        gate_layer: the gate's squashing function.
    """

    def __init__(
        self,
        channels: int,
        *,
        dim: int = 128,
        row_expansion: int = 4,
        dr_stride: int = 1,
        input_act_layer: ModuleFactory | None = nn.ReLU,
        act_layer: ModuleFactory = nn.ReLU,
        norm_layer: ModuleFactory = nn.BatchNorm2d,
        gate_layer: ModuleFactory = nn.Sigmoid,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        check_positive_int("dim", dim)
        self.dim = min(dim, channels)
        self.row_expansion = check_positive_int("row_expansion", row_expansion)
        self.dr_stride = check_positive_int("dr_stride", dr_stride)
        d, rows_out = self.dim, self.dim * self.row_expansion
        factory = {"device": device, "dtype": dtype}
        self.input_act = input_act_layer() if input_act_layer is not None else nn.Identity()
        self.has_input_act = input_act_layer is not None
        self.conv_reduce = nn.Conv2d(channels, d, 1, stride=dr_stride, bias=True, **factory)
        self.bn_reduce = norm_layer(d, **factory)
        self.act = act_layer()
        self.row_bn = norm_layer(d, **factory)
        self.row_conv = nn.Conv2d(d, rows_out, (d, 1), groups=d, bias=True, **factory)
        self.fc = nn.Conv2d(rows_out, channels, 1, bias=True, **factory)
        self.gate = gate_layer()

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        reduced = self.act(self.bn_reduce(self.conv_reduce(self.input_act(x))))
        rows = self.row_wise(covariance(reduced))  # (N, 4d)
        gate = self.gate(F.linear(rows, self.fc.weight.flatten(1), self.fc.bias))  # (N, C)
        return x * gate[:, :, None, None]

    def row_wise(self, cov: Tensor) -> Tensor:
        """``row_conv(row_bn(cov))`` on the ``(N, d, d)`` covariance, returned as ``(N, 4d)``.

        The official code runs both on ``cov`` viewed as ``(N, d, d, 1)``: a BN over the d rows,
        then a conv with kernel ``(d, 1)`` and ``groups = d`` (output ``4g + k`` is
        ``W[4g + k] . row_g + b[4g + k]``). The same function is computed here on the rows
        gathered row-major, ``(d, N, d)``: a BatchNorm then sees a contiguous ``(1, d, N, d)``
        map with the same elements per channel (so the same statistics and running
        estimates), and the grouped conv is one ``baddbmm`` over the d rows. On a CPU the
        grouped conv's kernels made the small ResNet's training step about 5x the baseline's;
        the official layout also hands the BatchNorm a permuted gradient, its slow path.
        Norms other than BatchNorm run in the official layout (they may normalise per sample).
        """
        n, d, k = cov.shape[0], self.dim, self.row_expansion
        if isinstance(self.row_bn, nn.modules.batchnorm._BatchNorm):
            by_row = self.row_bn(cov.transpose(0, 1).contiguous().unsqueeze(0)).squeeze(0)
        else:
            by_row = self.row_bn(cov.unsqueeze(3)).squeeze(3).transpose(0, 1)
        weight = self.row_conv.weight.view(d, k, d).transpose(1, 2)  # (d rows, d, k)
        out = torch.baddbmm(self.row_conv.bias.view(d, 1, k), by_row, weight)  # (d, N, k)
        return out.transpose(0, 1).reshape(n, d * k)

    def _reduced_hw(self, h: int, w: int) -> tuple[int, int]:
        s = self.dr_stride
        return (h - 1) // s + 1, (w - 1) // s + 1

    def formula_params(self) -> int:
        c, d, rows_out = self.channels, self.dim, self.dim * self.row_expansion
        reduce = c * d + d + 2 * d
        row = 2 * d + rows_out * d + rows_out
        fc = rows_out * c + c
        return reduce + row + fc

    def formula_macs(self, input_shape: Shape) -> int:
        n, c, h, w = input_shape
        d, rows_out = self.dim, self.dim * self.row_expansion
        hr, wr = self._reduced_hw(h, w)
        reduced = n * d * hr * wr
        input_act = numel(input_shape) if self.has_input_act else 0
        reduce = conv_macs(n, c, d, (hr, wr)) + 2 * reduced + reduced  # conv, BN, ReLU
        centre = reduced + n * d + reduced  # mean (a sum over M, divided by M) + subtract
        cov = n * d * d * hr * wr + n * d * d  # bmm + divide by M
        row = 2 * n * d * d + conv_macs(n, d, rows_out, (1, 1), (d, 1), groups=d)
        gate = conv_macs(n, rows_out, c, (1, 1)) + n * c  # fc + sigmoid
        scale = numel(input_shape)
        return input_act + reduce + centre + cov + row + gate + scale


register_attention(
    "gsop",
    GSoP,
    family="second_order",
    paper="Global Second-order Pooling Convolutional Networks",
    arxiv="1811.12006",
    kind="gate",
    blocks=BlockSelector(last_only=True),
    stage_kwargs={1: {"dr_stride": 2}},
    last_stage_stride=1,
    official_source="https://github.com/ZilinGao/Global-Second-order-Pooling-Convolutional-Networks "
    "torchvision/models/resnet.py (chan_att after bn3 of the last block of each stage, before "
    "the add; DR_stride 2 in stage 1; layer4 stride 1)",
    description="relu -> 1x1 C->128 + BN + ReLU -> covariance 128x128 -> BN -> row-wise "
    "conv 128->512 -> 1x1 512->C -> sigmoid -> scale the input",
)
