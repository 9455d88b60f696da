"""The measurement grid: one :class:`Config` per measured point, profiles of default axes.

A configuration is an attention type at one point of every axis: level (the module alone, or a
whole model with it inserted), mode (``forward``: eval + ``no_grad``; ``train``: forward +
backward), device, dtype (``fp32``, or ``bf16`` / ``fp16`` autocast), memory format, runtime,
batch, channels, resolution and thread count. Its :meth:`Config.key` names it in the raw
records, which is what resuming matches on.

The runtime is the field (and flag) ``compile``, named when it chose only between eager and
``torch.compile``; committed records keep that name and its values (:data:`COMPILE_MODES`):
``eager``; ``compile``, ``torch.compile`` with inductor; ``onnxruntime``, ONNX Runtime on the CPU
running a graph exported with ``torch.onnx.export``; ``openvino``, OpenVINO on the CPU running the
same graph (:mod:`suite.timing.runtimes`).

Profiles give the default axes. ``cpu`` is sized for the 2-core machine (the whole registry
at module level in under 10 minutes); ``gpu`` is wider (both dtypes under autocast, both
memory formats, eager and compiled). Command-line flags override single axes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

__all__ = [
    "AUTOCAST_DTYPES",
    "COMPILE_MODES",
    "Config",
    "DTYPES",
    "LEVELS",
    "MEMORY_FORMATS",
    "MODES",
    "reference_key",
    "PROFILES",
    "Axes",
    "expand",
    "profile_axes",
]

DTYPES: tuple[str, ...] = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
MEMORY_FORMATS: tuple[str, ...] = ("contiguous", "channels_last")
COMPILE_MODES: tuple[str, ...] = ("eager", "compile", "onnxruntime", "openvino")
"""The runtimes of the ``compile`` axis: eager PyTorch; ``compile``, torch.compile (inductor);
``onnxruntime`` and ``openvino``, an exported graph on the CPU (see the module docstring)."""
MODES: tuple[str, ...] = ("forward", "train")
LEVELS: tuple[str, ...] = ("module", "model")


WIRE_NAMES: dict[str, str] = {"attn": "name"}
""":class:`Config` fields by the name a worker's job gives them (:meth:`Config.to_wire`)."""
FIELD_NAMES: dict[str, str] = {wire: field for field, wire in WIRE_NAMES.items()}


@dataclass(frozen=True)
class Config:
    """One measured point: ``attn`` the attention type (the name every stage's records and tables
    give it), ``compile`` the runtime (:data:`COMPILE_MODES`), ``channels`` the module's input
    channels (3 at model level)."""

    stage: str
    attn: str
    mode: str
    level: str = "module"
    arch: str = ""
    device: str = "cpu"
    dtype: str = "fp32"
    memory_format: str = "contiguous"
    compile: str = "eager"
    batch: int = 8
    channels: int = 64
    size: int = 56
    threads: int = 1

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, MODES)
        _check_choice("level", self.level, LEVELS)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("memory_format", self.memory_format, MEMORY_FORMATS)
        _check_choice("compile", self.compile, COMPILE_MODES, what="the runtime")
        for axis in ("batch", "channels", "size", "threads"):
            value = getattr(self, axis)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{axis} must be a positive int, got {value!r}")
        if self.level == "model" and not self.arch:
            raise ValueError("a model-level config needs arch (e.g. 'resnet18')")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The input shape ``(N, C, H, W)``."""
        return (self.batch, self.channels, self.size, self.size)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def key(self) -> str:
        """A stable string naming this configuration (the resume key)."""
        parts = [
            self.stage, self.level, self.arch or "-", self.attn, self.mode, self.device,
            self.dtype, self.memory_format, self.compile,
            f"b{self.batch}", f"c{self.channels}", f"s{self.size}", f"t{self.threads}",
        ]
        return "|".join(parts)

    def as_row(self) -> dict[str, Any]:
        """Its fields, first in its record."""
        return asdict(self)

    def label(self) -> str:
        """A few words for the progress bar."""
        where = f"{self.arch} " if self.level == "model" else ""
        return f"{where}{self.attn} {self.mode} b{self.batch} c{self.channels} s{self.size}"

    def to_wire(self) -> dict[str, Any]:
        """Its fields as a worker process reads them: the attention type under ``name``, the
        field's name in every revision's workers (the regression gate drives older revisions'
        workers with this form)."""
        return {WIRE_NAMES.get(k, k): v for k, v in asdict(self).items()}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Config:
        """The configuration of :meth:`to_wire`'s dict (or of :meth:`as_row`'s)."""
        return cls(**{FIELD_NAMES.get(k, k): v for k, v in data.items()})


def _check_choice(name: str, value: str, choices: Sequence[str], *, what: str = "") -> None:
    if value not in choices:
        named = f"{name} ({what})" if what else name
        raise ValueError(f"{named} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class Axes:
    """The axes of a sweep; :func:`expand` takes their product."""

    batch: tuple[int, ...] = (8,)
    size: tuple[int, ...] = (56,)
    channels: tuple[int, ...] = (64,)
    dtype: tuple[str, ...] = ("fp32",)
    memory_format: tuple[str, ...] = ("contiguous",)
    compile: tuple[str, ...] = ("eager",)
    mode: tuple[str, ...] = ("forward", "train")
    extra: dict[str, Any] = field(default_factory=dict)

    def override(self, **axes: Sequence[Any] | None) -> Axes:
        """A copy with the axes given (not ``None``) replaced."""
        given = {k: tuple(v) for k, v in axes.items() if v is not None}
        unknown = set(given) - {f for f in self.__dataclass_fields__ if f != "extra"}
        if unknown:
            raise ValueError(f"unknown axes: {sorted(unknown)}")
        return replace(self, **given)


# Sizes: see the module docstring. The cpu latency profile is measured to take < 10 min for the
# whole registry on 2 cores (benchmarks/sweep_time.py).
PROFILES: dict[str, dict[str, Axes]] = {
    "cpu": {
        "latency": Axes(batch=(8,), size=(28,), channels=(64, 256), mode=("forward", "train")),
        "memory": Axes(batch=(8,), size=(56,), channels=(64,), mode=("forward", "train")),
    },
    "gpu": {
        "latency": Axes(
            batch=(32,),
            size=(56,),
            channels=(64, 256),
            dtype=("fp32", "bf16", "fp16"),
            memory_format=("contiguous", "channels_last"),
            compile=("eager", "compile"),
            mode=("forward", "train"),
        ),
        "memory": Axes(
            batch=(32,),
            size=(56,),
            channels=(64, 256),
            dtype=("fp32", "bf16"),
            memory_format=("contiguous", "channels_last"),
            mode=("forward", "train"),
        ),
    },
}


def profile_axes(profile: str, stage: str) -> Axes:
    """The default axes of ``profile`` (``cpu`` / ``gpu``) for ``stage`` (``latency`` / ``memory``)."""
    try:
        return PROFILES[profile][stage]
    except KeyError:
        raise ValueError(
            f"profile must be one of {', '.join(PROFILES)} and stage one of latency, memory; "
            f"got profile={profile!r}, stage={stage!r}"
        ) from None


def expand(
    stage: str,
    names: Iterable[str],
    axes: Axes,
    *,
    device: str,
    threads: int,
    level: str = "module",
    arch: str = "",
) -> list[Config]:
    """Every configuration of the product of ``names`` and ``axes``, name-major.

    Model-level configs ignore the channels axis (a model takes 3 input channels).
    """
    channels = (3,) if level == "model" else axes.channels
    configs = []
    for name, batch, size, chans, dtype, fmt, comp, mode in itertools.product(
        names, axes.batch, axes.size, channels, axes.dtype, axes.memory_format,
        axes.compile, axes.mode,
    ):
        configs.append(
            Config(
                stage=stage, attn=name, mode=mode, level=level, arch=arch, device=device,
                dtype=dtype, memory_format=fmt, compile=comp, batch=batch, channels=chans,
                size=size, threads=threads,
            )
        )
    return configs


def reference_key(config: Config) -> str:
    """What the reference of ``config`` depends on: every axis but the attention type."""
    return "|".join(config.key().split("|")[:3] + config.key().split("|")[4:])
