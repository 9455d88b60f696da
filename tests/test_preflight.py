"""The bench's preflight (suite/preflight.py): what a plan needs from the machine (a C compiler
and Python's headers for compiled rows, the accuracy stage's data) is checked after planning and
before any stage runs, so that it is not found missing hours into a run."""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import pytest

from suite import preflight
from suite.__main__ import main as suite_main
from suite.bench.profile import apply_overrides, load_profile
from suite.bench.runner import plan_runs
from suite.errors import UsageError


def _runs(profile: str, *overrides: str, stages: tuple[str, ...] = ("latency", "memory", "accuracy")) -> list:
    return plan_runs(apply_overrides(load_profile(profile), list(overrides)), list(stages), [], progress=False)


@pytest.fixture
def no_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without any C or C++ compiler on the PATH and no $CC / $CXX."""
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)


@pytest.fixture
def no_headers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An interpreter whose include folder holds no Python.h."""
    include = tmp_path / "include"
    include.mkdir()
    paths = sysconfig.get_paths()
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: {**paths, "include": str(include)})


def test_compiled_rows_without_a_c_compiler_are_refused_naming_the_fix(no_compiler: None) -> None:
    runs = _runs("gpu-quick")  # two compiled configurations on CUDA
    assert preflight.compiled_devices(runs) == ["cuda"]
    with pytest.raises(UsageError) as error:
        preflight.require(runs)
    text = str(error.value)
    assert "C compiler" in text and "cc, gcc, clang" in text and "$CC" in text
    assert "build-essential" in text and "--skip-preflight" in text
    assert "C++ compiler" not in text  # CUDA rows compile with Triton: C only


def test_compiled_cpu_rows_also_need_a_cxx_compiler(no_compiler: None) -> None:
    runs = _runs("smoke", "latency.0.compile=eager,compile", stages=("latency",))
    assert preflight.compiled_devices(runs) == ["cpu"]
    problems, _ = preflight.check_plan(runs, download=False)
    assert any("C++ compiler" in p and "$CXX" in p for p in problems)


def test_compiled_rows_without_python_headers_are_refused(no_headers: None) -> None:
    problems, _ = preflight.check_plan(_runs("gpu-quick"), download=False)
    assert len(problems) == 1 and "Python.h" in problems[0] and "python3-dev" in problems[0]


def test_a_compiler_named_by_cc_is_used(no_compiler: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/opt/cc/bin/clang -O2")
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: name if name == "/opt/cc/bin/clang" else None)
    assert preflight.find_compiler("CC", preflight.C_COMPILERS) == "/opt/cc/bin/clang"


def test_an_eager_plan_needs_no_compiler(no_compiler: None, no_headers: None) -> None:
    runs = _runs("smoke", stages=("latency", "memory"))
    assert preflight.compiled_devices(runs) == []
    assert preflight.check_plan(runs, download=False) == ([], [])


def test_missing_accuracy_data_is_refused_naming_the_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-data"
    runs = _runs("smoke", f"accuracy.data={missing}", stages=("accuracy",))
    problems, _ = preflight.check_plan(runs, download=False)
    assert len(problems) == 1 and str(missing) in problems[0] and "--skip-preflight" in problems[0]


def test_data_the_stage_would_download_is_downloaded_before_any_stage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import suite.accuracy.data as data

    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setattr(data, "default_data_root", lambda: tmp_path / "absent")
    runs = _runs("smoke", f"accuracy.cache-dir={tmp_path / 'cache'}", stages=("accuracy",))
    problems, notes = preflight.check_plan(runs, download=False)  # a dry run: says so, downloads nothing
    assert problems == [] and "downloads Imagenette" in notes[0]

    def offline(target: Path) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(data, "torchvision_imagenette", offline)
    with pytest.raises(UsageError, match="could not download Imagenette.*network unreachable"):
        preflight.require(runs)


def test_the_bench_stops_before_any_stage_and_skip_preflight_runs_it(
        no_compiler: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import suite.bench.cli as cli

    ran: list[int] = []
    monkeypatch.setattr(cli, "run_bench", lambda *a, **k: ran.append(1) or 0)
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "--profile", "smoke", "--stages", "latency", "--set", "latency.0.compile=eager,compile",
            "--no-progress"]
    assert suite_main(argv) == 2
    assert "preflight:" in capsys.readouterr().err and ran == [] and os.listdir(tmp_path) == []
    assert suite_main([*argv, "--skip-preflight"]) == 0 and ran == [1]


def test_a_package_the_plan_imports_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "thop" else real(name, *a))
    problems, _ = preflight.check_plan(_runs("smoke", stages=("cost",)), download=False)
    assert len(problems) == 1 and "missing: thop" in problems[0] and "--find-links" in problems[0]
    assert preflight.check_plan(_runs("smoke", stages=("memory",)), download=False) == ([], [])  # no cost stage
