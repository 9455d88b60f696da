"""Attention entries that fail on purpose, registered on import: loaded as a plugin file
(``suite.plugins``) so that the latency stage's worker processes have them too. Not a test
module."""

from __future__ import annotations

import os

import torch
from torch import nn

import modules


class Exploding(modules.AttentionModule):
    """Builds fine, raises in forward: must become a status row, not end the sweep."""

    def __init__(self, channels: int, **_: object) -> None:
        super().__init__()
        self.channels = channels
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("exploding forward")

    def formula_params(self) -> int:
        return 1

    def formula_macs(self, input_shape) -> int:
        return 0


class NoHalf(Exploding):
    """Refuses fp16 input the way a CPU kernel without a Half implementation does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float16:
            raise NotImplementedError("\"mean_cpu\" not implemented for 'Half'")
        return x * self.w


class Crashing(Exploding):
    """Kills its process in forward, as a segfaulting extension would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        os._exit(139)


def _refuses(channels: int, **_: object) -> nn.Module:
    raise ValueError("channels=8 is refused on purpose")


ENTRIES = {"zz_exploding": Exploding, "zz_nohalf": NoHalf, "zz_crashing": Crashing, "zz_refuses": _refuses}

for _name, _factory in ENTRIES.items():
    if _name not in modules.list_attention():
        modules.register_attention(_name, _factory, family="test", paper="-", arxiv=None, kind="gate")
