"""Gather-Excite: timm parity (default global extent, local extents, no MLP), widths, cost."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zoo_fixtures import randomize

import modules
from modules._base import reduced_channels
from modules.gather_excite import GatherExcite


def _timm_gather_excite(channels: int, **kwargs) -> nn.Module:
    """timm's ``GatherExcite``. timm 1.0.31 cannot build it with ``use_mlp=True`` (it passes
    ``*dd`` instead of ``**dd`` to ``ConvMlp``: "got multiple values for argument 'act_layer'");
    then build it without the MLP and attach the ``ConvMlp`` its constructor meant to build,
    sized with timm's own rounding."""
    ge_mod = pytest.importorskip("timm.layers.gather_excite")
    use_mlp = kwargs.pop("use_mlp", True)
    try:
        return ge_mod.GatherExcite(channels, use_mlp=use_mlp, **kwargs)
    except TypeError:
        if not use_mlp:
            raise
    module = ge_mod.GatherExcite(channels, use_mlp=False, **kwargs)
    hidden = ge_mod.make_divisible(channels * (1.0 / 16), 1, round_limit=0.0)
    module.mlp = ge_mod.ConvMlp(channels, hidden, act_layer=nn.ReLU)
    return module


def _copy_from_timm(ours: GatherExcite, theirs: nn.Module) -> None:
    if not ours.use_mlp:
        return
    ours.fc1.load_state_dict(theirs.mlp.fc1.state_dict())
    ours.fc2.load_state_dict(theirs.mlp.fc2.state_dict())


@pytest.mark.parametrize(
    ("channels", "kwargs", "shape_hw"),
    [
        (16, {}, (5, 7)),
        (24, {}, (4, 4)),  # hidden width rounds (1.5 -> 2) as timm does
        (64, {}, (8, 3)),
        (256, {}, (7, 7)),
        (32, {"extent": 2}, (8, 8)),
        (32, {"extent": 2}, (7, 5)),
        (32, {"extent": 4}, (9, 6)),
        (32, {"extent": 4}, (5, 3)),
        (32, {"extent": 2, "use_mlp": False}, (6, 7)),
        (32, {"use_mlp": False}, (6, 7)),
    ],
)
def test_ge_matches_timm(channels: int, kwargs: dict, shape_hw: tuple) -> None:
    theirs = randomize(_timm_gather_excite(channels, **kwargs)).eval()
    ours = GatherExcite(channels, **kwargs).eval()
    if ours.use_mlp:
        assert ours.hidden == theirs.mlp.fc1.out_channels
    _copy_from_timm(ours, theirs)
    x = torch.randn(2, channels, *shape_hw)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_ge_default_is_timms_default() -> None:
    info = modules.get_info("ge")
    assert info.kind == "gate" and info.placement == "block" and info.defaults == {}
    m = modules.create("ge", 256)
    assert m.extent == 0 and m.use_mlp and m.hidden == 16


@pytest.mark.parametrize(
    ("channels", "hidden"), [(16, 1), (24, 2), (40, 3), (256, 16), (2048, 128), (8, 1)]
)
def test_ge_hidden_width_rounds_like_timm(channels: int, hidden: int) -> None:
    assert reduced_channels(channels, 16, nearest=True) == hidden
    assert GatherExcite(channels).hidden == hidden


def test_ge_global_extent_is_a_channel_gate() -> None:
    m = randomize(GatherExcite(16)).eval()
    x = torch.randn(2, 16, 5, 4)
    with torch.no_grad():
        ratio = m(x) / x
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-5)


def test_ge_local_extent_varies_over_space() -> None:
    m = randomize(GatherExcite(16, extent=2)).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        ratio = m(x) / x
    assert not torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-3)


def test_ge_formula_macs_hand_count_global() -> None:
    # N=2, C=32, H=4, W=5 (1280 elements), hidden=2: GAP 1280, two FCs 2 * (2*32*2), ReLU 2*2,
    # sigmoid 2*32, scale 1280.
    expected = 1280 + 256 + 4 + 64 + 1280
    assert GatherExcite(32).formula_macs((2, 32, 4, 5)) == expected


def test_ge_formula_macs_hand_count_extent_2() -> None:
    # N=1, C=16, H=W=3, extent 2: kernel 3, stride 2, padding 1 -> 2x2 outputs; each axis's two
    # windows read 2 + 2 in-bounds elements, so 16 reads per channel. hidden=1 at 4 positions.
    gather = 16 * 16
    mlp = 2 * (4 * 16 * 1) + 4 * 1
    expected = gather + mlp + 4 * 16 + 16 * 9
    assert GatherExcite(16, extent=2).formula_macs((1, 16, 3, 3)) == expected


def test_ge_without_mlp_has_no_parameters() -> None:
    m = GatherExcite(64, use_mlp=False)
    assert m.formula_params() == 0 and not list(m.parameters())


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"extent": 3}, "extent"),
        ({"extent": -2}, "extent"),
        ({"reduction": 0}, "reduction"),
        ({"divisor": 0}, "divisor"),
    ],
)
def test_ge_bad_arguments(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        GatherExcite(32, **kwargs)
