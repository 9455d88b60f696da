"""GSoP's fast row-wise formulation against the official grouped conv: training-mode outputs,
gradients and BatchNorm running estimates in fp32 at every stage size the suite trains or
measures, in both memory formats; the bf16 covariance's error bound; official-shaped weights."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo_fixtures import randomize

import modules
from modules.second_order import GSoP, covariance


def _official_forward(m: GSoP, x: torch.Tensor) -> torch.Tensor:
    """The official channel mode with its own layers: ``row_bn`` on the covariance viewed as
    ``(N, d, d, 1)``, then ``row_conv`` as the grouped conv (kernel ``(d, 1)``, groups ``d``)."""
    reduced = m.act(m.bn_reduce(m.conv_reduce(m.input_act(x))))
    flat = reduced.flatten(2)
    centred = flat - flat.mean(2, keepdim=True)
    cov = torch.bmm(centred, centred.transpose(1, 2)) / flat.shape[2]
    rows = m.row_conv(m.row_bn(cov.unsqueeze(3)))
    return x * m.gate(m.fc(rows))


def _stage_cases() -> list[tuple[str, int, int, int]]:
    """(label, channels, size, dr_stride): GSoP-Net1's four ResNet-50 stages at 224 px and the
    small ResNet's three stages at 32 px (the accuracy stage's network)."""
    return [("resnet50-1", 256, 56, 2), ("resnet50-2", 512, 28, 1), ("resnet50-3", 1024, 14, 1),
            ("resnet50-4", 2048, 14, 1), ("small-1", 64, 16, 1), ("small-2", 128, 8, 1), ("small-3", 256, 4, 1)]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize(("label", "channels", "size", "dr_stride"), _stage_cases(), ids=[c[0] for c in _stage_cases()])
def test_training_step_matches_the_official_grouped_conv(label: str, channels: int, size: int, dr_stride: int,
                                                         channels_last: bool) -> None:
    torch.manual_seed(channels + size)
    fast = randomize(GSoP(channels, dr_stride=dr_stride), scale=0.2, seed=size).train()
    official = copy.deepcopy(fast)
    x = torch.randn(3, channels, size, size)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x_fast, x_official = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_fast, y_official = fast(x_fast), _official_forward(official, x_official)
    torch.testing.assert_close(y_fast, y_official, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(y_fast)
    y_fast.backward(grad)
    y_official.backward(grad)
    torch.testing.assert_close(x_fast.grad, x_official.grad, rtol=1e-5, atol=1e-5)
    scale = max(p.grad.abs().max().item() for p in official.parameters())  # the bias before a BN gets ~0
    for (name, p_fast), p_official in zip(fast.named_parameters(), official.parameters(), strict=True):
        torch.testing.assert_close(p_fast.grad, p_official.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)
    for (name, b_fast), b_official in zip(fast.named_buffers(), official.buffers(), strict=True):
        torch.testing.assert_close(b_fast, b_official, rtol=1e-5, atol=1e-6, msg=name)


def test_the_state_dict_keeps_the_official_grouped_conv_shapes_and_loads_its_weights() -> None:
    m = GSoP(256)
    state = m.state_dict()
    assert state["row_conv.weight"].shape == (512, 1, 128, 1)  # Conv2d(128, 512, (128, 1), groups=128)
    assert state["row_conv.bias"].shape == (512,)
    official = randomize(GSoP(256), scale=0.2, seed=3).eval()
    m.load_state_dict(official.state_dict())
    m.eval()
    x = torch.randn(2, 256, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _official_forward(official, x), rtol=1e-5, atol=1e-5)


def test_a_norm_other_than_batchnorm_runs_in_the_official_layout() -> None:
    def group_norm(d: int, **factory: object) -> nn.Module:
        return nn.GroupNorm(4, d, **factory)

    m = randomize(GSoP(64, norm_layer=group_norm), scale=0.2, seed=1)
    x = torch.randn(3, 64, 6, 6)
    torch.testing.assert_close(m(x), _official_forward(m, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("d", "positions"), [(64, 256), (128, 64), (128, 16), (128, 3136)])
def test_the_bf16_covariance_is_within_bf16_rounding_of_fp64(d: int, positions: int) -> None:
    torch.manual_seed(d + positions)
    side = int(positions ** 0.5)
    features = F.relu(torch.randn(4, d, side, side) + 0.3).to(torch.bfloat16)
    exact = covariance(features.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = covariance(features)
        low_channels_last = covariance(features.to(memory_format=torch.channels_last))
    for got in (low, low_channels_last):
        assert got.dtype == torch.bfloat16
        relative = ((got.double() - exact).norm() / exact.norm()).item()
        assert relative < 4e-3, f"relative error {relative:.2e} at d={d}, M={positions}"


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_the_written_out_covariance_gradient_passes_gradcheck(channels_last: bool) -> None:
    torch.manual_seed(5)
    features = torch.randn(2, 6, 4, 3, dtype=torch.float64)
    if channels_last:
        features = features.to(memory_format=torch.channels_last)
    assert torch.autograd.gradcheck(covariance, (features.requires_grad_(),))


def test_the_written_out_covariance_gradient_equals_autograds_of_the_plain_formula() -> None:
    torch.manual_seed(6)
    features = torch.randn(3, 16, 7, 7, dtype=torch.float64)
    grad = torch.randn(3, 16, 16, dtype=torch.float64)  # not symmetric: both products matter
    written = features.clone().requires_grad_()
    covariance(written).backward(grad)
    plain = features.clone().requires_grad_()
    flat = plain.flatten(2)
    centred = flat - flat.mean(2, keepdim=True)
    (torch.bmm(centred, centred.transpose(1, 2)) / flat.shape[2]).backward(grad)
    torch.testing.assert_close(written.grad, plain.grad, rtol=1e-10, atol=1e-12)


def test_a_second_order_gradient_through_the_covariance_raises_instead_of_dropping_terms() -> None:
    features = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(covariance(features).pow(2).sum(), features, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        grad.sum().backward()


def test_the_channels_last_covariance_reads_the_map_without_a_copy_and_keeps_its_gradient_layout() -> None:
    features = torch.randn(2, 8, 5, 5).to(memory_format=torch.channels_last).requires_grad_()
    covariance(features).sum().backward()
    assert features.grad.is_contiguous(memory_format=torch.channels_last)
    plain = torch.randn(2, 8, 5, 5, requires_grad=True)
    covariance(plain).sum().backward()
    assert plain.grad.is_contiguous()


def test_the_small_resnet_trains_with_gsop_under_bf16_autocast() -> None:
    model = modules.build_model("resnet_small", "gsop", num_classes=10).to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x), torch.arange(8))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
