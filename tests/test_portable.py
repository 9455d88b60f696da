"""Results carry no absolute path of the machine that made them (suite.portable), and no
committed file under reports/ or benchmarks/ does."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from suite import portable
from suite.portable import ABSOLUTE_PATH, format_traceback, portable_text, shown_path

ROOT = Path(__file__).resolve().parent.parent


def _committed_files(*folders: str) -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z", *folders], cwd=ROOT, capture_output=True,
                                check=True, timeout=60).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the committed files cannot be listed")
    return [ROOT / name for name in listed.split("\0") if name]


def _machine_paths() -> list[str]:
    """This machine's own prefixes, whatever folder they are in."""
    return sorted({str(ROOT), str(ROOT.parent), str(Path.home())} - {"/"}, key=len, reverse=True)


def test_pattern_finds_absolute_paths_and_spares_urls_and_relative_ones() -> None:
    for text in ("/work/main/suite/x.py", 'File "/home/u/a.py"', "data=/tmp/x", "at /root/.cache/y"):
        assert ABSOLUTE_PATH.search(text), text
    for text in ("https://github.com/home/x", "../shared/datasets/imagenette", "suite/timing/worker.py",
                 "<site-packages>/torch/nn/modules/module.py", "~/data/imagenette", "MACs/FLOPs", "a /b"):
        assert not ABSOLUTE_PATH.search(text), text


def test_shown_path_is_relative_where_it_can_be(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "reports").mkdir(parents=True)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(project)
    assert shown_path(project / "reports") == "reports"
    assert shown_path(tmp_path / "shared" / "data") == "../shared/data"
    assert shown_path(Path(portable.__file__).parent / "profiles" / "cpu.toml") == "suite/profiles/cpu.toml"
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "home"))
    elsewhere = Path("/nonexistent-root-folder/deep/imagenette")
    assert shown_path(elsewhere) == ".../imagenette"


def test_tracebacks_name_code_relative_to_the_package() -> None:
    try:
        import torch

        torch.zeros(2) @ torch.zeros(3)
    except RuntimeError as exc:
        try:
            raise ValueError("wrapped") from exc
        except ValueError as outer:
            text = format_traceback(outer)
    assert "tests/test_portable.py" in text and "ValueError: wrapped" in text
    for prefix in _machine_paths():
        assert prefix + "/" not in text
    assert portable_text(f"{ROOT}/suite/env.py and {Path.home()}/x") == "suite/env.py and ~/x"


def test_no_committed_result_carries_an_absolute_path() -> None:
    """Every committed file under reports/ and benchmarks/: neither this machine's own folders nor
    any /home/, /work/, /tmp/... path."""
    found: list[str] = []
    machine = _machine_paths()
    for path in _committed_files("reports", "benchmarks"):
        if path.suffix in (".png", ".pt", ".svg", ".pdf") or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if number == 1 and line.startswith("#!"):
                continue  # a script's interpreter line (#!/usr/bin/env bash) names no result
            match = ABSOLUTE_PATH.search(line)
            own = next((p for p in machine if p + "/" in line), None)
            if match or own:
                where = own or match.group(0)
                found.append(f"{path.relative_to(ROOT)}:{number}: {where}")
    assert not found, f"{len(found)} lines with absolute paths, first ones:\n" + "\n".join(found[:15])


def test_make_portable_rewrites_paths_and_nothing_else(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import json

    project = tmp_path / "project"
    raw = project / "reports" / "raw"
    raw.mkdir(parents=True)
    data = tmp_path / "shared" / "imagenette"
    record = {"data": str(data), "top1": 0.8125, "traceback": f'File "{portable.PACKAGE_PARENT}/suite/env.py", line 3'}
    (raw / "runs.jsonl").write_text(json.dumps(record) + "\n")
    (raw / "table.csv").write_text(f"attn,data,top1\nse,{data},0.8125\n")
    (raw / "plain.csv").write_text("attn,top1\nse,0.8125\n")
    monkeypatch.chdir(project)
    changed = portable.make_portable(project / "reports")
    assert changed == {"raw/runs.jsonl": 2, "raw/table.csv": 1}
    assert json.loads((raw / "runs.jsonl").read_text()) == {
        "data": "../shared/imagenette", "top1": 0.8125, "traceback": 'File "suite/env.py", line 3'}
    assert (raw / "table.csv").read_text() == "attn,data,top1\nse,../shared/imagenette,0.8125\n"
    assert portable.make_portable(project / "reports") == {}


def test_a_folder_under_the_root_is_not_shown_relative_to_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """From /tmp, /home/bob/data must not become ../home/bob/data (the layout again)."""
    monkeypatch.chdir("/tmp")
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: Path("/nonexistent-home")))
    assert shown_path("/nonexistent-root-folder/bob/data") == ".../data"
    assert shown_path(Path(portable.__file__).parent) == "suite"
