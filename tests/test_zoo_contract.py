"""The contract every registered attention type keeps, tested over the whole registry.

A newly registered module is tested here without writing a new test.
"""

from __future__ import annotations

import pytest
import torch

import modules
from modules import AttentionModule

NAMES = modules.list_attention()
CHANNELS = (16, 64, 256, 2048)
MUST_ACCEPT = (64, 256)  # every type must take the common ResNet widths


def _spatial(channels: int) -> tuple[int, int]:
    """A non-square map, kept small for wide modules so the suite stays fast."""
    return (5, 3) if channels >= 1024 else (9, 7)


def _build(name: str, channels: int) -> AttentionModule | None:
    """The module, or None when it refuses ``channels`` with a clear ValueError."""
    try:
        module = modules.create(name, channels)
    except ValueError as error:
        if channels in MUST_ACCEPT:
            raise
        assert "channels" in str(error), f"{name} refused channels={channels} without naming it: {error}"
        return None
    return module


def _seeded(name: str, channels: int) -> AttentionModule | None:
    torch.manual_seed(0)
    return _build(name, channels)


def test_registry_holds_at_least_24_types() -> None:
    assert len(NAMES) >= 24, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_metadata_is_complete(name: str) -> None:
    info = modules.get_info(name)
    assert info.kind in ("gate", "pool", "conv")
    assert info.family and info.paper
    assert info.arxiv is None or info.arxiv.replace(".", "").isdigit()
    if info.placement == "none":
        assert info.placement_note, f"{name} is refused by backbones without a reason"


@pytest.mark.parametrize("name", NAMES)
def test_official_source_names_a_repository_or_a_paper_section(name: str) -> None:
    """Every type says where its design and placement come from (``AttentionInfo``'s convention):
    an official repository's URL and files, or, without official code, the paper's section."""
    info = modules.get_info(name)
    source = info.official_source
    assert source.strip(), f"{name} has no official_source"
    if source.startswith(modules.NO_OFFICIAL_CODE):
        if info.arxiv:
            assert f"arXiv:{info.arxiv}" in source and "Sec. " in source, (name, source)
        else:
            assert "Sec. " in source or "no paper" in source, (name, source)
    else:
        repository, _, files = source.partition(" ")
        assert repository.startswith("https://github.com/") and repository.count("/") == 4, source
        assert files.strip(), f"{name}: official_source names a repository but no file"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", CHANNELS)
def test_shape_grad_nan_and_params(name: str, channels: int) -> None:
    module = _seeded(name, channels)
    if module is None:
        pytest.skip(f"{name} refuses channels={channels} (clearly)")
    assert isinstance(module, AttentionModule)
    real_params = sum(p.numel() for p in module.parameters())
    assert module.formula_params() == real_params

    h, w = _spatial(channels)
    x = torch.randn(2, channels, h, w, requires_grad=True)
    module.train()
    out = module(x)
    expected = module.output_shape(tuple(x.shape))
    assert tuple(out.shape) == tuple(expected)
    if modules.get_info(name).kind == "gate":
        assert out.shape == x.shape
    assert torch.isfinite(out).all()
    (out.square().mean() + out.mean()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, param in module.named_parameters():
        assert param.grad is not None, f"{name}: no gradient reached {pname}"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_one_by_one_map_and_eval_batch_one(name: str) -> None:
    module = _seeded(name, 64)
    x = torch.randn(2, 64, 1, 1)
    out = module.train()(x)
    assert tuple(out.shape) == tuple(module.output_shape(tuple(x.shape)))
    assert torch.isfinite(out).all()
    module.eval()
    with torch.no_grad():
        for shape in ((1, 64, 1, 1), (1, 64, 11, 6)):
            single = module(torch.randn(shape))
            assert tuple(single.shape) == tuple(module.output_shape(shape))
            assert torch.isfinite(single).all()


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name: str) -> None:
    source = _seeded(name, 64)
    # perturb every saved float tensor so a default-initialised copy would differ
    # (non-persistent buffers, such as FcaNet's fixed DCT basis, are rebuilt, not saved)
    with torch.no_grad():
        for tensor in source.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor).abs())
    torch.manual_seed(1)
    target = modules.create(name, 64)
    target.load_state_dict(source.state_dict(), strict=True)
    x = torch.randn(2, 64, 8, 6)
    source.eval()
    target.eval()
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_value_error(name: str) -> None:
    module = _seeded(name, 64).eval()
    with pytest.raises(ValueError, match="4-D"):
        module(torch.randn(64, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        module(torch.randn(1, 32, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        modules.create(name, 0)


@pytest.mark.parametrize("name", NAMES)
def test_formula_macs_is_positive_int(name: str) -> None:
    module = _seeded(name, 64)
    macs = module.formula_macs((1, 64, 14, 14))
    assert isinstance(macs, int) and macs > 0
    # doubling the batch doubles the work
    assert module.formula_macs((2, 64, 14, 14)) == 2 * macs


@pytest.mark.parametrize("name", NAMES)
def test_meta_device_construction(name: str) -> None:
    """The suite builds on the meta device to count without allocating."""
    module = modules.create(name, 64, device="meta")
    tensors = list(module.parameters()) + list(module.buffers())
    assert all(t.device.type == "meta" for t in tensors)


def test_duplicate_name_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        modules.register_attention(
            "se", lambda c: None, family="x", paper="x", arxiv=None, kind="gate"
        )


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ValueError, match="close matches: .*se"):
        modules.create("sse", 64)


def test_list_filter_uses_fnmatch() -> None:
    assert modules.list_attention("se") == ["se"]
    assert set(modules.list_attention("*se*")) >= {"se", "ese"}
    assert modules.list_attention("no-such-*") == []


def test_register_and_unregister_a_plugin() -> None:
    from modules.squeeze_excite import SqueezeExcite

    modules.register_attention(
        "test_plugin_se", SqueezeExcite, family="test", paper="p", arxiv=None, kind="gate", reduction=4
    )
    try:
        assert modules.create("test_plugin_se", 64).hidden == 16
    finally:
        modules.unregister_attention("test_plugin_se")
    assert "test_plugin_se" not in modules.list_attention()


@pytest.mark.parametrize("name", modules.list_attention())
def test_no_weight_decay_names_own_parameters(name: str) -> None:
    m = _build(name, 64)
    assert m is not None
    for module in m.modules():
        if isinstance(module, modules.AttentionModule):
            own = dict(module.named_parameters(recurse=False))
            assert module.no_weight_decay() <= set(own), type(module).__name__


def test_list_attention_follows_the_include_order_without_duplicates() -> None:
    assert modules.list_attention("se,ese,se") == ["se", "ese"]
    assert modules.list_attention(["eca*", "se"])[:2] == sorted(n for n in modules.list_attention() if n.startswith("eca"))[:2]
    assert modules.list_attention("eca*", exclude="eca_k*") == [n for n in modules.list_attention("eca*") if not n.startswith("eca_k")]
    assert modules.list_attention() == sorted(modules.list_attention())


def test_list_attention_strict_names_the_pattern_that_matches_nothing() -> None:
    with pytest.raises(ValueError, match=r"'zz\*' matches no registered .*Registered \(\d+\): .*se"):
        modules.list_attention("se,zz*", strict=True)
    with pytest.raises(ValueError, match="close matches: se"):
        modules.list_attention("sse", strict=True)
    assert modules.list_attention("zz*") == []


def test_the_baseline_name_cannot_be_registered() -> None:
    with pytest.raises(ValueError, match="backbone without attention"):
        modules.register_attention(modules.BASELINE, lambda c: None, family="x", paper="x", arxiv=None, kind="gate")
