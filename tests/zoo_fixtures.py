"""Helpers the zoo's tests share (imported by the test files; the fixtures are in conftest.py)."""

from __future__ import annotations

import torch
from torch import nn


def randomize(module: nn.Module, seed: int = 0, scale: float = 0.3) -> nn.Module:
    """Random weights (normal, SD ``scale``) and batch-norm statistics (means SD 0.1, variances
    in [0.5, 1.5)), from a generator seeded with ``seed``, so that a parity check compares
    something other than the initialisation. Returns ``module``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return module
