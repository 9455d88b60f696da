"""What a bench plan needs from the machine, checked before any stage runs.

* **Compiled rows** (a latency or memory invocation whose compile axis holds ``compile``, on any
  device): ``torch.compile``'s inductor builds its kernels with the machine's compilers. Triton
  (CUDA) compiles a launcher with a C compiler and Python's headers; on the CPU inductor
  compiles C++ against the same headers. So a C compiler (``$CC``, else ``cc``, ``gcc`` or
  ``clang`` on the PATH) and ``Python.h`` in the interpreter's include folder
  (``sysconfig.get_paths()["include"]``) are required, and for compiled CPU rows a C++ compiler
  (``$CXX``, else ``c++``, ``g++`` or ``clang++``). Without them every compiled row would fail,
  hours into a run.
* **Python packages** the plan's stages import (:data:`PACKAGES`): those ``pyproject.toml``
  declares, checked here because a machine whose environment was not made by ``pip install``
  (a GPU machine without network, torch preinstalled) may lack some (fvcore and thop, which
  only the cost stage and the report of its tables need).
* **The accuracy stage's data**: found the way the stage finds it
  (:func:`suite.accuracy.data.resolve_data_root`: ``--data``, ``$ATTNBENCH_DATA``, the shared
  copy beside the checkout). Where the stage would download Imagenette, the download happens
  here (``download``), so a machine without network fails now, not after the other stages;
  a dry run only says that it would download.

:func:`check_plan` returns the problems found, one line each, naming what is missing and how to
fix it; :func:`require` raises them as one :class:`~suite.errors.UsageError`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = ["PACKAGES", "C_COMPILERS", "CXX_COMPILERS", "find_compiler", "python_header", "compiled_devices", "check_plan",
           "require", "data_note"]

PACKAGES = {"cost": ("fvcore", "thop"), "": ("torchvision", "numpy", "pandas", "tqdm", "seaborn", "matplotlib")}
"""The packages each stage imports beyond torch ("": every plan: the stages and the report)."""
C_COMPILERS = ("cc", "gcc", "clang")
CXX_COMPILERS = ("c++", "g++", "clang++")
SKIP = "or pass --skip-preflight to run anyway"
COMPILER_FIX = ("install one (Debian/Ubuntu: apt-get install build-essential python3-dev; RHEL/Fedora: dnf install "
                "gcc gcc-c++ python3-devel; conda: conda install -c conda-forge c-compiler cxx-compiler), set "
                "{var} to it, leave out the compiled rows (--set latency.compile=eager), " + SKIP)


def find_compiler(variable: str, names: Sequence[str]) -> str | None:
    """The compiler ``$variable`` names (its first word, when it is on the PATH or a path), else
    the first of ``names`` on the PATH; None when there is none."""
    chosen = os.environ.get(variable, "").split()
    if chosen:
        return shutil.which(chosen[0])
    return next((path for name in names if (path := shutil.which(name))), None)


def python_header() -> Path | None:
    """``Python.h`` of this interpreter (in ``sysconfig``'s include folder), None when missing."""
    include = sysconfig.get_paths().get("include")
    header = Path(include) / "Python.h" if include else None
    return header if header is not None and header.is_file() else None


def compiled_devices(runs: Sequence[Any]) -> list[str]:
    """The device types ("cpu", "cuda") of the plan's compiled rows: the latency and memory
    invocations whose compile axis (given, or their preset's) holds ``compile``."""
    from .timing.sweep import axes_from_settings

    kinds = []
    for run in runs:
        if run.stage not in ("latency", "memory"):
            continue
        device = run.settings.device or "cpu"
        if "compile" in axes_from_settings(run.settings, run.stage, device).compile:
            kinds.append("cuda" if device.startswith("cuda") else "cpu")
    return list(dict.fromkeys(kinds))


def _compiler_problems(devices: Sequence[str]) -> list[str]:
    """What compiled rows on ``devices`` lack: compilers and Python's headers."""
    if not devices:
        return []
    where = f"compiled rows (--compile compile) on {' and '.join(devices)}"
    problems = []
    if find_compiler("CC", C_COMPILERS) is None:
        problems.append(f"{where} need a C compiler for Triton and inductor: no $CC and none of "
                        f"{', '.join(C_COMPILERS)} on the PATH; " + COMPILER_FIX.format(var="$CC"))
    if "cpu" in devices and find_compiler("CXX", CXX_COMPILERS) is None:
        problems.append(f"{where} need a C++ compiler for inductor's CPU kernels: no $CXX and none of "
                        f"{', '.join(CXX_COMPILERS)} on the PATH; " + COMPILER_FIX.format(var="$CXX"))
    if python_header() is None:
        include = sysconfig.get_paths().get("include") or "?"
        problems.append(f"{where} need Python's headers (Python.h) for the kernels' launchers: none in {include}; "
                        f"install them (Debian/Ubuntu: apt-get install python3-dev; RHEL/Fedora: python3-devel; "
                        f"pyenv and conda interpreters ship them), " + SKIP)
    return problems


def _importable(name: str) -> bool:
    """Whether ``import name`` finds the package (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def _package_problems(runs: Sequence[Any]) -> list[str]:
    """The packages the plan's stages import that this environment lacks."""
    wanted = [*PACKAGES[""], *(name for stage in dict.fromkeys(r.stage for r in runs) for name in PACKAGES.get(stage, ()))]
    missing = [name for name in dict.fromkeys(wanted) if not _importable(name)]
    if not missing:
        return []
    return [f"Python packages missing: {', '.join(missing)} (pyproject.toml declares them); install them "
            f"(pip install {' '.join(missing)}, or without network from wheels brought along: pip install "
            f"--no-index --find-links DIR {' '.join(missing)}), leave out the stages that need them (--stages), "
            + SKIP]


def data_note(settings: Any, *, download: bool) -> tuple[str | None, str | None]:
    """The accuracy invocation's data set: (a problem, or None; a note, or None). With
    ``download`` the data set the stage would download is downloaded now; without it, the note
    says that the bench would download it."""
    from .accuracy.data import (
        DataNotFoundError,
        imagenette_cache_root,
        resolve_data_root,
        torchvision_imagenette,
    )

    cache = Path(settings.cache_dir) if settings.cache_dir else None
    wanted: list[Path] = []

    def note_only(target: Path) -> None:
        wanted.append(target)
        raise OSError("not downloaded in a dry run")

    try:
        root = resolve_data_root(settings.data, cache, downloader=torchvision_imagenette if download else note_only)
    except (ValueError, DataNotFoundError) as exc:
        if wanted:
            return None, (f"accuracy: no local copy of the data; the bench downloads Imagenette into "
                          f"{imagenette_cache_root(cache)} before any stage runs (needs network)")
        return f"accuracy: {exc}; {SKIP}", None
    return None, f"accuracy: data in {root}"


def check_plan(runs: Sequence[Any], *, download: bool) -> tuple[list[str], list[str]]:
    """The plan's problems and notes (one line each): the packages its stages import, compilers
    and headers for compiled rows, the accuracy stage's data (downloaded now when the stage would, with ``download``; under
    ``torchrun`` only the first process of each machine looks)."""
    problems = _package_problems(runs) + _compiler_problems(compiled_devices(runs))
    notes: list[str] = []
    if os.environ.get("LOCAL_RANK", "0") == "0":
        for run in runs:
            if run.stage == "accuracy":
                problem, note = data_note(run.settings, download=download)
                problems += [problem] if problem else []
                notes += [note] if note else []
    return list(dict.fromkeys(problems)), list(dict.fromkeys(notes))


def require(runs: Sequence[Any]) -> list[str]:
    """Check the plan before it runs (downloading the data the accuracy stage would download);
    raise a :class:`UsageError` listing every problem; return the notes."""
    problems, notes = check_plan(runs, download=True)
    if problems:
        raise UsageError("preflight: " + "\n  ".join(problems))
    return notes
