"""Activation cost: the bytes autograd saves for backward in one training step.

Attention blocks mostly move memory: SE's ``x * gate`` saves the whole input for the
backward of the multiply. :func:`saved_activations` runs one forward in training mode under
``torch.autograd.graph.saved_tensors_hooks`` and sums what autograd saved:

* each saved tensor is reduced to its *storage*: views of one storage (a saved ``x`` and a
  saved ``x.view(...)``, or an in-place ``relu_`` result saved by two ops) count once, by the
  identity of the storage (``untyped_storage()._cdata``, valid while the graph holds the
  tensors; the pack hook returns the tensor itself, so no storage is freed and reused while
  we count) and at the storage's full size (``nbytes()``: a saved view keeps all of it alive);
* parameters and buffers are left out (they live in memory whatever the graph does), and
  so are empty storages;
* the input is included when it requires a gradient: inside a network the block's input comes
  from trainable layers, and a gate that multiplies it keeps it alive for backward.

The forward works on the meta device as well (storages have sizes but no data), which is how
the suite runs it. The backward itself is not run: everything it needs is saved by the end of
the forward, and nothing the backward allocates is "saved".
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["saved_activations"]


def _storage_key(tensor: torch.Tensor) -> tuple[int, int]:
    storage = tensor.untyped_storage()
    return storage._cdata, storage.nbytes()


def saved_activations(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    input_requires_grad: bool = True,
    device: str | torch.device = "cpu",
    freeze_batchnorm: bool = False,
) -> dict[str, Any]:
    """``act_saved_bytes`` and ``act_saved_tensors`` (distinct storages) of one training forward.

    ``freeze_batchnorm`` keeps the batch-norm layers in eval mode (for the cases where a
    training-mode BN cannot run: one value per channel, a pooled map at batch 1); on CPU an
    eval BN saves its input but leaves the two batch statistics empty (the meta kernel
    allocates them, so run this case on real tensors). Empty storages are not counted.
    The model is left in training mode; callers put it back as they need.
    """
    model.train()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    excluded = {_storage_key(t)[0] for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key, nbytes = _storage_key(tensor)
        if key not in excluded and nbytes:  # empty placeholders (eval BN's stats) hold nothing
            seen[key] = nbytes
        return tensor

    x = torch.randn(input_shape, device=device, requires_grad=input_requires_grad)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(x)
    del out  # frees the graph and what it saved
    return {
        "act_saved_bytes": sum(seen.values()),
        "act_saved_tensors": len(seen),
    }
