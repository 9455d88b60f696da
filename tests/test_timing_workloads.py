"""Workloads (what is run per configuration) and the roofline arithmetic; tiny shapes, no timing."""

from __future__ import annotations

import math

import pytest
import torch

import modules
from suite.timing.grid import Config
from suite.timing.roofline import MachinePeaks, min_bytes, roofline
from suite.timing.workloads import StageError, build_workload, classify_error, instantiate


def _config(**kw) -> Config:
    base = {"stage": "latency", "attn": "se", "mode": "forward", "batch": 2, "channels": 16, "size": 8, "threads": 1}
    return Config(**{**base, **kw})


def test_forward_step_runs_without_grad_and_reference_is_a_3x3_conv() -> None:
    w = build_workload(_config())
    out = w.step()
    assert not out.requires_grad and out.shape == (2, 16, 8, 8)
    assert w.reference_name == "conv3x3(16->16)"
    assert w.reference_step().shape == (2, 16, 8, 8)
    assert w.formula_macs == modules.create("se", 16).formula_macs((2, 16, 8, 8))
    assert not w.module.training


def test_weights_are_seeded_and_the_global_rng_is_left_alone() -> None:
    """Two processes must time the same computation: weights come from a fixed seed."""
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = instantiate(_config(attn="gsop", channels=32))
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)  # a different global state must not change the weights
    second = instantiate(_config(attn="gsop", channels=32))
    for a, b in zip(first[0].state_dict().values(), second[0].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(first[1].weight, second[1].weight)


def test_train_step_fills_parameter_gradients_each_time() -> None:
    w = build_workload(_config(mode="train"))
    assert w.module.training
    w.step()
    grads = [p.grad for p in w.module.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    first = [g.clone() for g in grads]
    w.step()  # gradients are reset, not accumulated
    for a, p in zip(first, w.module.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)


def test_bf16_autocast_feeds_a_low_precision_input() -> None:
    w = build_workload(_config(dtype="bf16"))
    assert w.input_element_size == 2
    assert w.step().dtype == torch.bfloat16


def test_channels_last_input_and_output() -> None:
    w = build_workload(_config(memory_format="channels_last"))
    assert w.step().is_contiguous(memory_format=torch.channels_last)


def test_conv_kind_is_built_channels_to_channels() -> None:
    conv_names = modules.list_attention(kind="conv")
    if not conv_names:
        pytest.skip("no conv-kind entry registered")
    w = build_workload(_config(attn=conv_names[0]))
    assert w.output_shape == (2, 16, 8, 8)


def test_pool_kind_keeps_the_cc_reference() -> None:
    pools = [n for n in modules.list_attention(kind="pool") if n.startswith("ccp")]
    if not pools:
        pytest.skip("no cross-channel pooling registered")
    w = build_workload(_config(attn=pools[0]))
    assert w.output_shape[1] < 16 and w.reference_name == "conv3x3(16->16)"


def test_unknown_name_is_a_build_error() -> None:
    with pytest.raises(StageError) as info:
        build_workload(_config(attn="nope"))
    assert info.value.status == "build_error" and "nope" in str(info.value)


def test_model_level_reference_is_the_plain_backbone() -> None:
    w = build_workload(_config(level="model", arch="resnet18", channels=3, size=32, batch=1))
    assert w.reference_name == "resnet18(attn=None)"
    assert w.params > sum(p.numel() for p in modules.build_model("resnet18").parameters())
    assert w.formula_macs is None
    assert w.step().shape == w.reference_step().shape


@pytest.mark.parametrize(
    ("exc", "compile_phase", "status"),
    [
        (torch.OutOfMemoryError("CUDA out of memory"), False, "oom"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: out of memory"), False, "oom"),
        (NotImplementedError("x"), False, "unsupported"),
        (RuntimeError('"addmm" not implemented for \'Half\''), False, "unsupported"),
        (RuntimeError("inductor failed"), True, "compile_error"),
        (RuntimeError("shape mismatch"), False, "error"),
        (StageError("timeout", "slow"), False, "timeout"),
    ],
)
def test_classify_error(exc: BaseException, compile_phase: bool, status: str) -> None:
    assert classify_error(exc, compile_phase=compile_phase) == status


def test_min_bytes_model() -> None:
    assert min_bytes((2, 16, 8, 8), (2, 16, 1, 1), 4, 100) == (2048 + 32) * 4 + 100


def test_roofline_picks_the_binding_roof() -> None:
    # 1 MB at 1 GB/s = 1 ms; 1e6 MACs at 1e9 MAC/s = 1 ms -> tie goes to memory; raise MACs
    memory_bound = roofline(0.004, 1_000_000, 100_000, 1e9, 1e9)
    assert memory_bound["bound"] == "memory"
    assert memory_bound["bound_ms"] == pytest.approx(1.0)
    assert memory_bound["roofline_fraction"] == pytest.approx(0.25)
    compute_bound = roofline(0.004, 1_000_000, 3_000_000, 1e9, 1e9)
    assert compute_bound["bound"] == "compute" and compute_bound["bound_ms"] == pytest.approx(3.0)
    no_macs = roofline(0.002, 1_000_000, None, 1e9, 1e9)
    assert no_macs["bound"] == "memory" and math.isnan(no_macs["compute_bound_ms"])


def test_machine_peaks_rows() -> None:
    peaks = MachinePeaks("cpu", 10e9, {"fp32": 5e10, "bf16": math.nan}, 1 << 20, 256, 32 << 20)
    rows = {(r["quantity"], r["dtype"]): r["value"] for r in peaks.as_rows()}
    assert rows[("copy_bandwidth_GBps", "")] == pytest.approx(10)
    assert rows[("matmul_GMACps", "fp32")] == pytest.approx(50)
    assert rows[("llc_bytes", "")] == 32 << 20
