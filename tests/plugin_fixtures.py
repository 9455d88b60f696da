"""A toy attention class defined outside ``modules/``, written to disk as a user's plugin file
(imported by the bench tests; not a test module)."""

from __future__ import annotations

from pathlib import Path

HALF_GATE_SOURCE = '''
import torch
from torch import nn


class HalfGate(nn.Module):
    """A toy gate defined outside modules/: x * sigmoid(w * mean over channels)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * torch.sigmoid(self.weight * x.mean(1, keepdim=True))
'''


def write_half_gate(folder: Path, module: str) -> Path:
    """Write ``HalfGate`` as ``folder/<module>.py`` and return that path."""
    path = folder / f"{module}.py"
    path.write_text(HALF_GATE_SOURCE)
    return path
