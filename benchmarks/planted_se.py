"""A planted slowdown for the instruction gate: SE with about 5% more instructions, same output.

``se_plus5`` is :class:`modules.squeeze_excite.SqueezeExcite` plus redundant multiplies of its
gate by 1.0 (exact in floating point, so the output is SE's bit for bit): one in eval mode
and two in training mode, because a training step also runs each multiply's backward. At the
gate's shape (batch 2, C = 64, 28 x 28, 1 thread) that is about +5% instructions per forward
and +6% per training step (``benchmarks/instruction_gate_check.py`` prints the measured
figures). Load it with ``--plugin benchmarks/planted_se.py`` and hold it to SE's baseline with
``--baseline-name se_plus5=se``.
"""

from __future__ import annotations

from torch import Tensor

import modules
from modules.squeeze_excite import SqueezeExcite


class SqueezeExcitePlus5(SqueezeExcite):
    """SE doing redundant work on its gate: same output, about 5% more instructions."""

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        pooled = x.mean((2, 3), keepdim=True)
        gate = self.gate(self.fc2(self.act(self.fc1(pooled))))
        for _ in range(2 if self.training else 1):
            gate = gate.mul(1.0)
        return x * gate


if "se_plus5" not in modules.list_attention():
    modules.register_attention("se_plus5", SqueezeExcitePlus5, family="test", paper="planted slowdown (5%)",
                               arxiv=None, kind="gate")
