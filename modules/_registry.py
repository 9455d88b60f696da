"""The registry of attention types: one name per design or variant, with its metadata.

Modelled on timm's ``register_model`` / ``list_models`` and torchvision's ``_api``: family files
register their entries at import time with :func:`register_attention`; a duplicate name is
refused; :func:`list_attention` filters with fnmatch; :func:`create` builds an entry by name.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

__all__ = [
    "AttentionInfo",
    "BlockSelector",
    "Kind",
    "Placement",
    "register_attention",
    "unregister_attention",
    "list_attention",
    "BASELINE",
    "NO_OFFICIAL_CODE",
    "get_info",
    "create",
]

Kind = Literal["gate", "pool", "conv"]
"""``gate``: output shape == input shape. ``pool``: changes channels or spatial size.
``conv``: replaces a convolution, ``in_channels -> out_channels``."""

Placement = Literal[
    "block", "pre_conv", "after_conv2", "after_block", "stage", "transition", "head", "conv", "none"
]
"""Where :func:`modules.build_model` puts the entry: on the residual branch after the block's last
BN, before the add (``block``), before every convolution (``pre_conv``: GCT), right after the
block's 3x3 convolution (``after_conv2``: SimAM), after the block's output, as a unit of its own
(``after_block``: non-local), once at the end of every stage (``stage``), once after every stage
but the last (``transition``: BAM's bottlenecks), as the classifier's global pooling (``head``),
in place of the block's 3x3 convolution (``conv``), or nowhere (``none``: refused, with
``placement_note``). The blocks a placement applies to are chosen by a :class:`BlockSelector`."""

KINDS: tuple[str, ...] = ("gate", "pool", "conv")
PLACEMENTS: tuple[str, ...] = (
    "block", "pre_conv", "after_conv2", "after_block", "stage", "transition", "head", "conv", "none"
)
GATE_PLACEMENTS: tuple[str, ...] = (
    "block", "pre_conv", "after_conv2", "after_block", "stage", "transition"
)
"""The placements a ``gate`` entry (output shape == input shape) can be moved to explicitly."""


@dataclass(frozen=True)
class BlockSelector:
    """Which residual blocks a per-block placement applies to (every block by default).

    Args:
        stages: 1-based ResNet stages (``layer1`` is 1) that receive modules; ``None``: all.
        every: keep block ``i`` (0-based within its stage) when ``i % every == every - 1``
            (the non-local code's ``nonlocal_mod``: 2 gives the 2nd, 4th, ... block).
        last_only: only the last block of each selected stage.
        skip_unexpanded: in MobileNetV2, skip inverted residuals with expand ratio 1 (they have
            no expansion conv), as the Coordinate Attention code does.
    """

    stages: tuple[int, ...] | None = None
    every: int = 1
    last_only: bool = False
    skip_unexpanded: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every must be a positive int, got {self.every!r}")
        if self.stages is not None and not all(isinstance(s, int) and s >= 1 for s in self.stages):
            raise ValueError(f"stages must be None or 1-based ints, got {self.stages!r}")

    def selects(self, stage: int, index: int, count: int) -> bool:
        """Whether block ``index`` of the ``count`` blocks of ``stage`` (1-based) is selected."""
        if self.stages is not None and stage not in self.stages:
            return False
        if self.last_only:
            return index == count - 1
        return index % self.every == self.every - 1

    def describe(self) -> str:
        """A short text for tables (``""`` when every block is selected)."""
        parts = []
        if self.stages is not None:
            parts.append("stages " + ",".join(str(s) for s in self.stages))
        if self.last_only:
            parts.append("last block of each stage")
        elif self.every > 1:
            parts.append(f"every {self.every}th block")
        if self.skip_unexpanded:
            parts.append("MobileNetV2: expand ratio != 1")
        return "; ".join(parts)


ALL_BLOCKS = BlockSelector()


NO_OFFICIAL_CODE = "no official code"
"""How an ``official_source`` starts for a type whose design has no official code."""


@dataclass(frozen=True)
class AttentionInfo:
    """Metadata of one registered attention type.

    ``official_source`` says where the design and its default placement are read from, in one of
    two forms:

    * ``"https://github.com/<owner>/<repo> <file>[, <file>] (<the insertion in that code>)"``: the
      official repository that defines the block and inserts it into the backbone (a second
      repository is named after it where the entry follows that one's configuration, e.g. timm's);
    * ``"no official code: <paper>, <venue or arXiv id>, Sec. <n> (<what it says>)"`` (starting
      with :data:`NO_OFFICIAL_CODE`): a type without official code (plain global pooling, the
      designs of the user's seed texts), cited by the paper section that defines it, or by its
      source text where there is no paper; the text says whether the placement is the paper's or
      our own choice.
    """

    name: str
    factory: Callable[..., nn.Module]
    family: str
    paper: str
    arxiv: str | None
    kind: Kind
    placement: Placement = "block"
    placement_note: str = ""
    blocks: BlockSelector = ALL_BLOCKS
    stage_kwargs: dict[int, dict[str, Any]] = field(default_factory=dict)
    official_source: str = ""
    last_stage_stride: int | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def as_row(self) -> dict[str, Any]:
        """The metadata as a flat dict (for tables)."""
        return {
            "name": self.name,
            "family": self.family,
            "kind": self.kind,
            "placement": self.placement,
            "blocks": self.blocks.describe(),
            "paper": self.paper,
            "arxiv": self.arxiv or "",
            "description": self.description,
        }


BASELINE = "none"
"""The name that stands for "no attention" (the plain backbone) in results; never registered."""


_REGISTRY: dict[str, AttentionInfo] = {}


def register_attention(
    name: str,
    factory: Callable[..., nn.Module],
    *,
    family: str,
    paper: str,
    arxiv: str | None,
    kind: Kind,
    placement: Placement | None = None,
    placement_note: str = "",
    description: str = "",
    backbone_kwargs: dict[str, Any] | None = None,
    blocks: BlockSelector | None = None,
    stage_kwargs: dict[int, dict[str, Any]] | None = None,
    official_source: str = "",
    last_stage_stride: int | None = None,
    **defaults: Any,
) -> AttentionInfo:
    """Register ``factory`` under ``name``; ``defaults`` are keyword arguments bound to it.

    ``factory(channels, **kwargs)`` must return a module; a ``conv`` entry also takes
    ``out_channels``. ``backbone_kwargs`` are extra keyword arguments :func:`modules.build_model`
    passes when it inserts the entry into a backbone (e.g. ``out_norm_layer=None`` for a conv
    entry whose own trailing norm would duplicate the block's). ``placement`` and ``blocks`` are
    the official insertion (``official_source`` names the file it is read from, in the form
    :class:`AttentionInfo` describes);
    ``stage_kwargs`` maps a 1-based ResNet stage to keyword arguments used there (e.g. FcaNet's
    per-stage DCT grid), applied to the ImageNet ResNets only. ``last_stage_stride`` is a
    backbone change of the official network (GSoP-Net1's stride-1 ``layer4``), applied with the
    official placement in the ImageNet ResNets. Raises ``ValueError`` on a duplicate name, an unknown kind or placement.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if name == BASELINE:
        raise ValueError(f"{BASELINE!r} stands for the backbone without attention and cannot be registered")
    if name in _REGISTRY:
        raise ValueError(f"attention type {name!r} is already registered (family {_REGISTRY[name].family!r})")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if placement is None:
        placement = {"gate": "block", "pool": "none", "conv": "conv"}[kind]
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    info = AttentionInfo(
        name=name,
        factory=factory,
        family=family,
        paper=paper,
        arxiv=arxiv,
        kind=kind,
        placement=placement,
        placement_note=placement_note,
        defaults=dict(defaults),
        backbone_kwargs=dict(backbone_kwargs or {}),
        blocks=blocks if blocks is not None else ALL_BLOCKS,
        stage_kwargs={int(k): dict(v) for k, v in (stage_kwargs or {}).items()},
        official_source=official_source,
        last_stage_stride=last_stage_stride,
        description=description,
    )
    _REGISTRY[name] = info
    return info


def unregister_attention(name: str) -> None:
    """Remove ``name`` (for plugins and tests); ``ValueError`` if it is not registered."""
    get_info(name)
    del _REGISTRY[name]


def _patterns(spec: str | Sequence[str] | None) -> list[str]:
    items = spec.split(",") if isinstance(spec, str) else list(spec or [])
    return [item.strip() for item in items if item.strip()]


def list_attention(
    include: str | Sequence[str] | None = None,
    *,
    exclude: str | Sequence[str] | None = None,
    kind: Kind | None = None,
    strict: bool = False,
) -> list[str]:
    """Registered names matching ``include``, as timm's ``list_models`` filters its models.

    ``include`` and ``exclude`` are fnmatch patterns, comma-separated or a sequence. The result
    follows the order of the include patterns (sorted within each), without duplicates; no
    include means every name, sorted. A name matching an ``exclude`` pattern, or not of
    ``kind``, is left out. ``strict``: an include pattern that matches nothing raises
    ``ValueError`` naming it and listing the registered names (close matches for a name
    without wildcards)."""
    registered = sorted(_REGISTRY)
    chosen: list[str] = []
    for pattern in _patterns(include) or ["*"]:
        matched = [n for n in registered if fnmatch.fnmatchcase(n, pattern)]
        if not matched and strict:
            if not any(ch in pattern for ch in "*?["):
                get_info(pattern)  # the error with close matches
            raise ValueError(f"attention pattern {pattern!r} matches no registered attention type. "
                             f"Registered ({len(registered)}): {', '.join(registered)}")
        chosen += [n for n in matched if n not in chosen]
    excluded = _patterns(exclude)
    chosen = [n for n in chosen if not any(fnmatch.fnmatchcase(n, p) for p in excluded)]
    if kind is not None:
        chosen = [n for n in chosen if _REGISTRY[n].kind == kind]
    if strict and not chosen:
        raise ValueError(f"attention patterns {include!r} (excluding {exclude!r}) select nothing")
    return chosen


def get_info(name: str) -> AttentionInfo:
    """Metadata of ``name``; ``ValueError`` listing close matches if it is unknown."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(
            f"unknown attention type {name!r}{hint}. "
            f"Registered: {', '.join(sorted(_REGISTRY))}"
        ) from None


def create(name: str, channels: int, **kwargs: Any) -> nn.Module:
    """Build the registered attention type ``name`` for ``channels`` input channels.

    Keyword arguments override the entry's defaults (e.g. ``reduction=8``); a ``conv`` entry
    takes ``out_channels`` (default: ``channels``), ``kernel_size`` and ``stride``.
    """
    info = get_info(name)
    merged = {**info.defaults, **kwargs}
    return info.factory(channels, **merged)
