"""Preflight of a GPU machine: what the bench needs, checked in seconds before any long step.

    python -m benchmarks.gpu_preflight [--out preflight.json] [--dry-run]

Each check is one entry of ``preflight.json`` (``name``, ``status``, ``value``, ``detail``,
``required``), printed as one line too:

- ``python``, ``torch``, ``torchvision``, ``triton``: versions (torch with its CUDA and cuDNN
  builds); torchvision and triton are imported, so a build that does not match torch fails here.
- ``dependencies``: every distribution ``pyproject.toml`` depends on can be found (a warning:
  the GPU image may lack fvcore and thop, which only the cost stage imports).
- ``cuda``: ``torch.cuda.is_available()``, then the device's name, compute capability, SMs and
  memory.
- ``driver``: ``nvidia-smi``'s name, driver, memory, clocks and temperature.
- ``gpu_processes``: other processes on the GPU, by the latency stage's own check
  (:func:`suite.timing.cuda.gpu_check`: ``exclusive``, ``shared``, or ``unverified`` where this
  process is not listed, as in another PID namespace); a busy GPU makes latencies meaningless.
- ``c_compiler`` and ``python_headers``: the C compiler and ``Python.h`` found as the bench's
  own preflight finds them (:mod:`suite.preflight`) build a shared object that includes
  ``Python.h``, as Triton does for compiled rows.
- ``data``: the accuracy stage's dataset root (``$ATTNBENCH_DATA``, else
  ``../shared/datasets/imagenette``; :func:`suite.accuracy.data.default_data_root`) with its
  ``train/`` and ``val/`` class folders; a warning, since the quick check has no accuracy stage.
- ``tf32_torch`` and ``tf32_suite``: the legacy TF32 getters
  (``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32``,
  ``torch.get_float32_matmul_precision()``, which inductor reads) are read after the new
  ``fp32_precision`` API was set: by hand to ``ieee`` and ``tf32`` (``tf32_torch``: how this torch
  behaves, a warning), and by the latency stage's own settings in each of its TF32 modes
  (``suite.timing.timer.cuda_settings``; ``tf32_suite``: a getter that raises there fails compiled
  rows, so it fails the check). Every setting is restored after.
- ``compile_default`` and ``compile_suite_settings``: ``torch.compile`` of a tiny function with a
  matmul on the GPU, under PyTorch's defaults and under the latency stage's settings with TF32
  off, compared with eager.

Statuses: ``ok``, ``fail``, ``warn`` (not needed by the quick check) and ``skipped`` (needs a
GPU). With ``--dry-run`` (no GPU needed) the GPU-only checks are skipped and the exit status is
0 whatever is missing; otherwise it is 1 when a required check did not pass.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Check", "run_checks", "main"]

ROOT = Path(__file__).resolve().parent.parent
GPU_ONLY = "skipped: needs a CUDA GPU"
_NVIDIA_SMI_GPU = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu"
_IMPORT_NAMES = {"pillow": "PIL", "scikit-learn": "sklearn", "pyyaml": "yaml"}
"""Distributions whose import name differs from their name (for a dependency added later)."""


@dataclass
class Check:
    """One preflight check: its name, ``ok``/``fail``/``warn``/``skipped``, the value read, a
    detail for the reader, and whether the GPU check needs it to pass."""

    name: str
    status: str
    value: Any = None
    detail: str = ""
    required: bool = True


def _failure(exc: BaseException) -> str:
    """One line naming an exception: its type and the first line of its message."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:300]


def check_versions() -> list[Check]:
    """Python, torch (with its CUDA and cuDNN builds), torchvision and triton, each imported."""
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    checks = [
        Check("python", "ok", platform.python_version(), sys.executable),
        Check("torch", "ok", torch.__version__, f"CUDA build {torch.version.cuda}, cuDNN {cudnn}"),
    ]
    for name, required in (("torchvision", True), ("triton", False)):
        try:
            module = importlib.import_module(name)
            checks.append(Check(name, "ok", getattr(module, "__version__", "?"), required=required))
        except Exception as exc:  # an import error or a build that does not match torch
            status = "fail" if required else "warn"
            checks.append(Check(name, status, None, _failure(exc), required=required))
    return checks


def _dependency_names(pyproject: Path) -> list[str]:
    """The distributions ``pyproject.toml`` depends on whose environment marker holds here."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    specs = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    names = []
    for spec in specs:
        requirement, _, marker = spec.partition(";")
        if marker.strip() and not _marker_holds(marker):
            continue
        names.append(re.match(r"[A-Za-z0-9_.\-]+", requirement.strip()).group(0))
    return names


def _marker_holds(marker: str) -> bool:
    """Whether a PEP 508 environment marker holds here (False when ``packaging`` is absent)."""
    try:
        from packaging.markers import Marker
    except ImportError:
        return False
    return Marker(marker).evaluate()


def check_dependencies(pyproject: Path = ROOT / "pyproject.toml") -> Check:
    """Every dependency of the project can be found (by its import name, without importing it).
    A warning, not a failure: each stage imports what it uses when it runs (fvcore and thop only
    the cost stage, which ``gpu-quick`` has not), and the bench records a stage that fails."""
    if not pyproject.is_file():
        return Check("dependencies", "skipped", None, f"no {pyproject.name} beside the package", required=False)
    names = _dependency_names(pyproject)
    missing = [n for n in names if importlib.util.find_spec(_IMPORT_NAMES.get(n.lower(), n)) is None]
    if missing:
        return Check("dependencies", "warn", missing, "not installed: the stages that import them fail "
                     "(carry them as wheels, docs/gpu.md)", required=False)
    return Check("dependencies", "ok", names, required=False)


def check_cuda() -> Check:
    """CUDA is usable: the first device's name, compute capability, SMs and memory."""
    import torch

    if not torch.cuda.is_available():
        return Check("cuda", "fail", False, f"torch.cuda.is_available() is False (torch {torch.__version__}, "
                     f"CUDA build {torch.version.cuda}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
    props = torch.cuda.get_device_properties(0)
    value = {"devices": torch.cuda.device_count(), "name": props.name,
             "capability": f"{props.major}.{props.minor}", "sms": props.multi_processor_count,
             "memory_gib": round(props.total_memory / 2**30, 1)}
    return Check("cuda", "ok", value)


def _run(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a short command, capturing its output as text."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def check_driver() -> Check:
    """The driver, and the GPU's memory, clocks and temperature, as ``nvidia-smi`` reports them."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return Check("driver", "fail", None, "nvidia-smi not found", required=False)
    gpus = _run([smi, f"--query-gpu={_NVIDIA_SMI_GPU}", "--format=csv,noheader"])
    if gpus.returncode != 0:
        return Check("driver", "fail", None, (gpus.stderr or gpus.stdout).strip()[:300], required=False)
    return Check("driver", "ok", gpus.stdout.strip().splitlines(), f"fields: {_NVIDIA_SMI_GPU}", required=False)


def check_gpu_processes(cuda_ok: bool) -> Check:
    """Other processes on GPU 0, by the latency stage's own check
    (:func:`suite.timing.cuda.gpu_check`: exclusive, shared or unverified), with a CUDA context
    open so that this process is listed."""
    if not cuda_ok:
        return Check("gpu_processes", "skipped", None, GPU_ONLY, required=False)
    import torch

    from suite.timing.cuda import gpu_check

    torch.zeros(1, device="cuda")
    seen = gpu_check(0)
    status = {"exclusive": "ok", "shared": "warn"}.get(seen.state, "warn")
    detail = seen.reason(0) or seen.note or "no other process uses the GPU"
    return Check("gpu_processes", status, seen.state, detail, required=False)


def check_compiler_and_headers() -> list[Check]:
    """A C compiler and ``Python.h`` (found as the bench's preflight finds them,
    :mod:`suite.preflight`), and the compiler builds a shared object including ``Python.h``
    (what Triton does for each compiled kernel's launcher)."""
    from suite.preflight import C_COMPILERS, find_compiler, python_header

    header = python_header()
    headers = Check("python_headers", "ok" if header else "fail", str(header) if header else None,
                    "" if header else "Python.h missing: install the Python development headers")
    cc = find_compiler("CC", C_COMPILERS)
    if cc is None:
        return [Check("c_compiler", "fail", None, "no $CC, cc, gcc or clang: Triton cannot build kernels"), headers]
    version = _run([cc, "--version"]).stdout.strip().splitlines()[:1]
    if header is None:
        return [Check("c_compiler", "ok", version, f"{cc} (not tried: no Python.h)"), headers]
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "probe.c"
        source.write_text("#include <Python.h>\nint attnbench_probe(void) { return Py_IsInitialized(); }\n")
        built = _run([cc, str(source), "-O1", "-shared", "-fPIC", f"-I{header.parent}", "-o",
                      str(Path(folder) / "probe.so")], timeout=60)
    if built.returncode != 0:
        detail = f"{cc} could not build a shared object including Python.h: {built.stderr.strip()[:300]}"
        return [Check("c_compiler", "fail", version, detail), headers]
    return [Check("c_compiler", "ok", version, f"{cc} built a shared object including Python.h"), headers]


def check_data() -> Check:
    """The accuracy stage's dataset root with ``train/`` and ``val/`` class folders."""
    from suite.accuracy.data import DATA_ENV, default_data_candidates, default_data_root

    root = default_data_root()
    splits = {split: sorted(p.name for p in (root / split).iterdir() if p.is_dir())
              for split in ("train", "val") if (root / split).is_dir()}
    if len(splits) < 2 or not all(splits.values()):
        looked = ", ".join(str(c) for c in default_data_candidates())
        return Check("data", "warn", str(root), f"no train/ and val/ class folders (looked in {looked}; "
                     f"set ${DATA_ENV}); only the accuracy stage needs them", required=False)
    return Check("data", "ok", str(root), f"{len(splits['train'])} train, {len(splits['val'])} val classes",
                 required=False)


@contextlib.contextmanager
def _fp32_precision(precision: str) -> Iterator[None]:
    """Set ``fp32_precision`` of cuBLAS matmul and cuDNN conv (torch >= 2.9) and restore it."""
    import torch

    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = (matmul.fp32_precision, conv.fp32_precision)
    matmul.fp32_precision = conv.fp32_precision = precision
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


def _has_fp32_precision_api() -> bool:
    import torch

    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(
        getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def _suite_settings(tf32: str | bool) -> contextlib.AbstractContextManager[Any]:
    """The TF32 and cuDNN settings the latency stage applies around its timing."""
    from suite.timing.timer import cuda_settings

    return cuda_settings(cudnn_benchmark=True, tf32=tf32)


def _suite_tf32_modes() -> list[str | bool]:
    """The latency stage's ``--tf32`` values (``suite.timing.timer.TF32_MODES`` where it has them)."""
    from suite.timing import timer

    return list(getattr(timer, "TF32_MODES", (False, True)))


def _legacy_getters() -> dict[str, Callable[[], Any]]:
    import torch

    return {"torch.backends.cuda.matmul.allow_tf32": lambda: torch.backends.cuda.matmul.allow_tf32,
            "torch.backends.cudnn.allow_tf32": lambda: torch.backends.cudnn.allow_tf32,
            "torch.get_float32_matmul_precision()": torch.get_float32_matmul_precision}


def _read_getters(settings: Callable[[], contextlib.AbstractContextManager[Any]]) -> tuple[dict[str, Any], list[str]]:
    """The legacy getters read inside ``settings()``: their values (``raises T`` for one that
    raised) and the first line of each error."""
    values: dict[str, Any] = {}
    errors: list[str] = []
    with settings():
        for name, getter in _legacy_getters().items():
            try:
                values[name] = getter()
            except Exception as exc:  # torch's RuntimeError for mixed legacy and new APIs
                values[name] = f"raises {type(exc).__name__}"
                errors.append(f"{name}: {_failure(exc)[:160]}")
    return values, errors


def _getter_check(name: str, variants: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]],
                  required: bool) -> Check:
    """One check over several settings: fails (warns when not required) when a getter raised."""
    value, errors = {}, []
    for label, settings in variants.items():
        value[label], raised = _read_getters(settings)
        errors += [f"[{label}] {error}" for error in raised]
    if errors:
        return Check(name, "fail" if required else "warn", value,
                     "; ".join(errors) + " (inductor reads these getters when it compiles a matmul)", required)
    return Check(name, "ok", value, required=required)


def check_tf32_getters() -> list[Check]:
    """The legacy TF32 getters read after the new ``fp32_precision`` API was set: by hand to
    ``ieee`` and ``tf32`` (``tf32_torch``, what this torch does; a warning), and by the latency
    stage's own settings in each TF32 mode (``tf32_suite``, what compiled rows meet; required)."""
    suite = {f"suite tf32={mode}": (lambda mode=mode: _suite_settings(mode)) for mode in _suite_tf32_modes()}
    if not _has_fp32_precision_api():
        plain = _getter_check("tf32_torch", {"defaults": contextlib.nullcontext}, required=False)
        plain.detail = plain.detail or "no fp32_precision API in this torch: legacy flags only"
        return [plain, _getter_check("tf32_suite", suite, required=True)]
    by_hand = {f"fp32_precision={p}": (lambda p=p: _fp32_precision(p)) for p in ("ieee", "tf32")}
    return [_getter_check("tf32_torch", by_hand, required=False), _getter_check("tf32_suite", suite, required=True)]


def _compile_smoke(name: str, settings: contextlib.AbstractContextManager[Any]) -> Check:
    """``torch.compile`` of a small matmul function on the GPU, compared with eager."""
    import torch

    torch._dynamo.reset()
    started = time.perf_counter()
    try:
        with settings:
            x = torch.randn(64, 64, device="cuda")
            fn = lambda t: torch.relu(t @ t.T) + torch.sin(t)  # noqa: E731
            compiled = torch.compile(fn)
            got, want = compiled(x), fn(x)
            torch.cuda.synchronize()
            error = float((got - want).abs().max())
    except Exception as exc:
        return Check(name, "fail", None, _failure(exc))
    seconds = round(time.perf_counter() - started, 1)
    status = "ok" if error < 1e-2 else "fail"
    return Check(name, status, {"max_abs_error": error, "seconds": seconds})


def check_compile(cuda_ok: bool) -> list[Check]:
    """The compile smoke tests, under PyTorch's defaults and under the latency stage's settings
    with TF32 off (IEEE fp32 matmuls, the case whose getters broke compiled rows)."""
    if not cuda_ok:
        return [Check("compile_default", "skipped", None, GPU_ONLY),
                Check("compile_suite_settings", "skipped", None, GPU_ONLY)]
    return [_compile_smoke("compile_default", contextlib.nullcontext()),
            _compile_smoke("compile_suite_settings", _suite_settings(False))]


def run_checks(*, dry_run: bool) -> list[Check]:
    """Every check, in order; the GPU-only ones are skipped with ``dry_run`` or without CUDA."""
    checks = [*check_versions(), check_dependencies()]
    cuda = check_cuda()
    gpu = cuda.status == "ok" and not dry_run
    checks += [cuda, check_driver(), check_gpu_processes(gpu), *check_compiler_and_headers(), check_data(),
               *check_tf32_getters()]
    checks += check_compile(gpu)
    return checks


def _line(check: Check) -> str:
    value = check.value if not isinstance(check.value, (dict, list)) else json.dumps(check.value)
    detail = f"  ({check.detail})" if check.detail else ""
    return f"{check.status:<8}{check.name:<24}{value}{detail}"


def main(argv: list[str] | None = None) -> int:
    """Run the checks, print one line each, write the JSON; see the module docstring for the
    exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write the checks to this JSON file")
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU needed: skip the GPU-only checks and exit 0 whatever is missing")
    args = parser.parse_args(argv)
    checks = run_checks(dry_run=args.dry_run)
    missing = [c.name for c in checks if c.required and c.status == "fail"]
    for check in checks:
        print(_line(check))
    verdict = "ready" if not missing else f"not ready: {', '.join(missing)}"
    print(f"preflight{' (dry run)' if args.dry_run else ''}: {verdict}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"dry_run": args.dry_run, "ready": not missing, "missing": missing,
                  "checks": [asdict(c) for c in checks]}
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if args.dry_run or not missing else 1


if __name__ == "__main__":
    sys.exit(main())
