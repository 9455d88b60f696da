"""What is run for a configuration: the measured step, its reference, and their static facts.

Module level: the registered attention type built for ``channels`` and an input of
``(batch, channels, size, size)``; the reference is a 3x3 convolution ``channels -> channels``
(no bias, padding 1, stride 1) on the same input -- the convolution a ResNet block runs next
to the attention, whatever the module's kind. A ``conv``-kind entry is built as
``channels -> channels``, kernel 3, stride 1, so its reference is exactly the convolution it
replaces.

Model level: ``modules.build_model(arch, attn=name)``; the reference is the same backbone with
``attn=None``, on an input of ``(batch, 3, size, size)``.

Steps (both the module's and the reference's, built the same way):

* ``forward``: ``eval()``, ``torch.no_grad()``;
* ``train``: ``train()``, gradients set to ``None``, forward, then ``out.backward(grad)`` with a
  fixed random ``grad`` of the output's shape. The input requires grad, as it does inside a
  network, so the backward computes the input gradient too.

Dtype: ``bf16`` / ``fp16`` run the forward under ``torch.autocast`` with the *input* already
in that dtype (inside an autocast network the activations between layers are low precision);
parameters stay fp32, as autocast keeps them. Steps that will be captured into a CUDA graph
(``graph_safe``, :func:`suite.timing.cuda.capture_graph`) run autocast with its weight-cast
cache off, as graph capture requires. Memory format ``channels_last`` converts the
input and the parameters.

Runtime (the ``compile`` axis): ``eager`` runs the modules as they are. ``compile`` wraps both
modules in ``torch.compile`` (inductor); the first call (which compiles, or loads the compiled
graph from inductor's on-disk cache) happens here, is timed and reported as ``compile_s``, and
``compile_cache`` says whether it hit that cache. ``onnxruntime`` and ``openvino`` export both
modules with ``torch.onnx.export`` and time the runtime's session
(:mod:`suite.timing.runtimes`: forward, fp32, CPU, contiguous only; other settings are
``unsupported`` before anything is built); ``compile_s`` is the module's export and session
creation. In every runtime the module first runs eagerly once, which checks that it runs at all.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from . import runtimes
from .grid import AUTOCAST_DTYPES, Config, reference_key

__all__ = [
    "StageError",
    "Workload",
    "build_workload",
    "classify_error",
    "instantiate",
    "make_input",
    "make_step",
    "prepare",
]


class StageError(Exception):
    """An error with the status it should be reported under (``build_error``, ``compile_error``,
    ``export_error``...) and ``details``, fields its record adds (``failed_op``)."""

    message_is_complete = True
    """Its message says what failed; the record quotes it without the exception's type."""

    def __init__(self, status: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.details = dict(details or {})


@dataclass
class Workload:
    """The callables and facts for one configuration."""

    step: Callable[[], Any]
    reference_step: Callable[[], Any]
    reference_name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input_element_size: int
    params: int
    param_bytes: int
    formula_macs: int | None
    compile_s: float | None
    input: Tensor | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def classify_error(exc: BaseException, *, compile_phase: bool = False) -> str:
    """The status of a failed configuration: ``oom``, ``unsupported``, ``compile_error`` or ``error``."""
    if isinstance(exc, StageError):
        return exc.status
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return "oom"
    if compile_phase:  # the eager call already worked: what fails now is the compiler
        return "compile_error"
    if isinstance(exc, NotImplementedError) or "not implemented for" in str(exc):
        return "unsupported"
    return "error"


def _autocast(config: Config) -> contextlib.AbstractContextManager[Any]:
    dtype = AUTOCAST_DTYPES[config.dtype]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=config.torch_device.type, dtype=dtype)


def make_step(module: Callable[[Tensor], Tensor], x: Tensor, config: Config, grad: Tensor | None = None, *,
              graph_safe: bool = False) -> Callable[[], Any]:
    """The callable the timer runs for ``config.mode`` (see the module docstring); ``graph_safe``:
    autocast without its cache, so that the step can be captured into a CUDA graph."""
    autocast = AUTOCAST_DTYPES[config.dtype]
    device_type = config.torch_device.type
    cache = {"cache_enabled": False} if graph_safe else {}

    if config.mode == "forward":

        def forward_step() -> Tensor:
            with torch.no_grad():
                if autocast is None:
                    return module(x)
                with torch.autocast(device_type=device_type, dtype=autocast, **cache):
                    return module(x)

        return forward_step

    if grad is None:
        raise ValueError("a train step needs the output gradient")
    parameters = [p for p in module.parameters() if p.requires_grad] if isinstance(module, nn.Module) else []

    def train_step() -> None:
        x.grad = None
        for p in parameters:
            p.grad = None
        if autocast is None:
            out = module(x)
        else:
            with torch.autocast(device_type=device_type, dtype=autocast, **cache):
                out = module(x)
        out.backward(grad)

    return train_step


WEIGHT_SEED = 0
"""Seed of the weights of every module under test and its reference.

Some modules' speed depends on their weight values, not only on their shapes: GSoP's
covariance path measured 4.7 ms with one random initialisation and 7.7 ms with another
(C=256, 56x56, batch 8, 2 threads), while the same seed repeated 7.1 ms four times. Seeding
the weights makes two processes time the same computation."""


def instantiate(config: Config, *, with_reference: bool = True) -> tuple[nn.Module, nn.Module | None, str]:
    """The module under test and its reference (``None`` unless ``with_reference``), on the CPU
    in fp32, with weights drawn from :data:`WEIGHT_SEED` (the global RNG state is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED)
        return _instantiate(config, with_reference)


def _instantiate(config: Config, with_reference: bool) -> tuple[nn.Module, nn.Module | None, str]:
    import modules  # the zoo; imported late so --help stays fast

    try:
        if config.level == "model":
            try:  # attn none: the A/A control, a second backbone without attention
                model = modules.build_model(config.arch, attn=None if config.attn == modules.BASELINE else config.attn)
            except ValueError as exc:  # the entry has no place in this backbone: a deliberate outcome
                raise StageError("refused", str(exc)) from exc
            reference = modules.build_model(config.arch, attn=None) if with_reference else None
            return model, reference, f"{config.arch}(attn=None)"
        info = modules.get_info(config.attn)
        kwargs: dict[str, Any] = {}
        if info.kind == "conv":
            kwargs = {"out_channels": config.channels, "kernel_size": 3, "stride": 1}
        module = modules.create(config.attn, config.channels, **kwargs)
    except StageError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported as a row
        raise StageError("build_error", f"{type(exc).__name__}: {exc}") from exc
    reference = nn.Conv2d(config.channels, config.channels, 3, padding=1, bias=False) if with_reference else None
    return module, reference, f"conv3x3({config.channels}->{config.channels})"


def prepare(module: nn.Module, config: Config) -> nn.Module:
    module = module.to(config.torch_device)
    if config.memory_format == "channels_last":
        module = module.to(memory_format=torch.channels_last)
    module.train(config.mode == "train")
    return module


def make_input(config: Config, generator_seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(generator_seed)
    x = torch.randn(config.shape, generator=generator)
    dtype = AUTOCAST_DTYPES[config.dtype]
    if dtype is not None:
        x = x.to(dtype)
    x = x.to(config.torch_device)
    if config.memory_format == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    if config.mode == "train":
        x.requires_grad_(True)
    return x


def _first_call(
    fn: Callable[[Tensor], Tensor], x: Tensor, config: Config, *, compiled: bool
) -> tuple[Tensor, float]:
    """Run one forward (as the step will), returning the output and the time it took."""
    start = time.perf_counter()
    try:
        with torch.set_grad_enabled(config.mode == "train"), _autocast(config):
            out = fn(x)
        if config.mode == "train":  # compile the backward too
            out.backward(torch.ones_like(out))
    except Exception as exc:  # noqa: BLE001
        status = classify_error(exc, compile_phase=compiled)
        raise StageError(status, f"{type(exc).__name__}: {exc}") from exc
    if config.torch_device.type == "cuda":
        torch.cuda.synchronize(config.torch_device)
    return out.detach(), time.perf_counter() - start


def _output_grad(out: Tensor, config: Config, seed: int) -> Tensor | None:
    """A fixed random gradient of the output's shape for a train step (``None`` for forward)."""
    if config.mode != "train":
        return None
    generator = torch.Generator().manual_seed(seed)
    grad = torch.randn(out.shape, generator=generator).to(out.dtype).to(out.device)
    if config.memory_format == "channels_last" and grad.dim() == 4:
        grad = grad.contiguous(memory_format=torch.channels_last)
    return grad


def _reference_step(reference: nn.Module, x: Tensor, config: Config, graph_safe: bool) -> Callable[[], Any]:
    """The reference's step, after the eager first call that checks it runs."""
    ref_out, _ = _first_call(reference, x, config, compiled=False)
    return make_step(reference, x, config, _output_grad(ref_out, config, seed=2), graph_safe=graph_safe)


ReferenceCache = dict[str, tuple[Callable[[], Any], str, dict[str, Any]]]
"""Reference steps a worker process built, by :func:`reference_key`: the step, the reference's
name and the facts its build recorded (an exported reference's exporter)."""


def build_workload(config: Config, reference_cache: ReferenceCache | None = None, *,
                   graph_safe: bool = False) -> Workload:
    """Build the module, its reference, the input and both steps; raise StageError on failure.

    With ``reference_cache``, the reference step of an earlier configuration with the same
    :func:`reference_key` is reused (already built, compiled or exported, run and warm), and a
    new one is stored there: a worker visiting many types of one shape builds and warms its 3x3
    conv or plain backbone once. The key names the runtime, so an eager reference never stands
    in for an exported or compiled one, nor one runtime's for another's. ``graph_safe``: steps fit for
    CUDA-graph capture (:func:`make_step`); a worker's jobs are all one or all the other, so its
    cache holds one kind.
    """
    exported = config.compile in runtimes.EXPORTED_RUNTIMES
    if exported:
        runtimes.check_supported(config)  # before anything is built
    cacheable = reference_cache is not None
    cached = reference_cache.get(reference_key(config)) if cacheable and reference_cache is not None else None
    raw_module, raw_reference, reference_name = instantiate(config, with_reference=cached is None)
    try:
        module = prepare(raw_module, config)
        reference = prepare(raw_reference, config) if raw_reference is not None else None
        x = make_input(config)
    except Exception as exc:  # noqa: BLE001
        raise StageError(classify_error(exc), f"{type(exc).__name__}: {exc}") from exc

    # eager first call: checks the module runs at all in this setting
    out, _ = _first_call(module, x, config, compiled=False)
    if exported:
        step, reference_step, compile_s, facts = _exported_steps(module, reference, x, out, config, cached)
    else:
        step, reference_step, compile_s, facts = _torch_steps(module, reference, x, out, config, cached, graph_safe)
    if cacheable and cached is None and reference_cache is not None:
        kept = {k: v for k, v in facts.items() if k == "reference_exporter"}  # not its build's costs
        reference_cache[reference_key(config)] = (reference_step, reference_name, kept)

    params = sum(p.numel() for p in module.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    formula_macs = None
    if config.level == "module" and hasattr(raw_module, "formula_macs"):
        try:
            formula_macs = int(raw_module.formula_macs(config.shape))
        except NotImplementedError:
            formula_macs = None
    return Workload(
        step=step,
        reference_step=reference_step,
        reference_name=reference_name,
        module=module,
        input_shape=tuple(x.shape),
        output_shape=tuple(out.shape),
        input_element_size=x.element_size(),
        params=params,
        param_bytes=param_bytes,
        formula_macs=formula_macs,
        compile_s=compile_s,
        input=x,
        facts=facts,
    )


StepsBuilt = tuple[Callable[[], Any], Callable[[], Any], float | None, dict[str, Any]]
"""The module's step, the reference's step, ``compile_s`` and the facts of the round."""


def _torch_steps(module: nn.Module, reference: nn.Module | None, x: Tensor, out: Tensor, config: Config,
                 cached: tuple[Callable[[], Any], str, dict[str, Any]] | None, graph_safe: bool) -> StepsBuilt:
    """Both steps in eager PyTorch, or (``compile``) under ``torch.compile``, timing the module's
    first compiled call and whether inductor's cache served it (``compile_cache``)."""
    run_module: Callable[[Tensor], Tensor] = module
    compile_s = None
    facts: dict[str, Any] = {}
    grad = _output_grad(out, config, seed=1)
    if cached is not None:
        reference_step = cached[0]
    elif config.compile != "compile":
        assert reference is not None
        reference_step = _reference_step(reference, x, config, graph_safe)
    if config.compile == "compile":
        if cached is None:
            # a new reference starts from an empty dynamo cache; the designs of its shape, and
            # the reference itself, add their entries to the code objects they share
            # (nn.Conv2d.forward, ResNet.forward...) up to COMPILE_ENTRIES
            torch._dynamo.reset()
        _limit_recompiles()
        try:
            run_module = torch.compile(module)
        except Exception as exc:  # noqa: BLE001
            raise StageError("compile_error", f"{type(exc).__name__}: {exc}") from exc
        with runtimes.CompileCacheCount() as cache:
            _, compile_s = _first_call(run_module, x, config, compiled=True)
        facts["compile_cache"] = cache.outcome
        if cached is None:
            assert reference is not None
            _first_call(reference, x, config, compiled=False)  # the eager reference runs at all
            run_reference = torch.compile(reference)
            ref_out, _ = _first_call(run_reference, x, config, compiled=True)
            reference_step = make_step(run_reference, x, config, _output_grad(ref_out, config, seed=2),
                                       graph_safe=graph_safe)
    return make_step(run_module, x, config, grad, graph_safe=graph_safe), reference_step, compile_s, facts


COMPILE_ENTRIES = 64
"""Dynamo cache entries allowed per code object in a worker (torch's default is 8): every design
of a shape compiled beside one reused compiled reference recompiles the code objects they
share (each new module instance fails the last entry's guards)."""


def _limit_recompiles() -> None:
    """Allow :data:`COMPILE_ENTRIES` entries per code object and make reaching the limit an error
    (a ``compile_error`` row) instead of dynamo's silent fall-back to eager, which would time
    eager code under the label ``compile``."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), COMPILE_ENTRIES))
    for name in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):
        if hasattr(config, name):
            setattr(config, name, True)


def _exported_steps(module: nn.Module, reference: nn.Module | None, x: Tensor, out: Tensor, config: Config,
                    cached: tuple[Callable[[], Any], str, dict[str, Any]] | None) -> StepsBuilt:
    """Both steps under an exported runtime (:func:`suite.timing.runtimes.exported_step`); the
    module's output checked against the eager ``out``."""
    built = runtimes.exported_step(module, x, config, "module", expected=out)
    facts = dict(built.facts)
    if cached is not None:
        reference_step = cached[0]
        facts.update(cached[2])
    else:
        assert reference is not None
        reference_built = runtimes.exported_step(reference, x, config, "reference")
        reference_step = reference_built.step
        facts.update(reference_built.facts)
    return built.step, reference_step, round(built.seconds, 4), facts
