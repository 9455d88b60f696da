"""The stage registry (:mod:`suite.stages`): every command and report reads it, so a new stage is
one spec and its module (``tests/toy_stage.py``); and the report refuses folders it must not write."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
import toy_stage

from suite import stages
from suite.__main__ import main as suite_main
from suite.bench.profile import load_profile
from suite.stages import COMMANDS, measuring_stages

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The toy stage registered: its spec added to the registry, nothing else."""
    monkeypatch.setitem(stages.COMMANDS, "toy", toy_stage.SPEC)


def test_every_measuring_stage_names_its_code_files_and_report() -> None:
    assert list(measuring_stages()) == ["cost", "latency", "memory", "ops", "accuracy"]
    for name, spec in COMMANDS.items():
        module = spec.command_module()
        assert callable(module.main) and callable(module.add_arguments) and module.SETTINGS, name
        if spec.measures:
            assert spec.files and spec.report_tables and spec.summary and spec.summary_columns, name
            for path in (spec.tables, spec.summary, *spec.report_tables.values()):
                assert callable(stages.load_function(path)), path


def test_a_toy_stage_runs_from_the_command_line_the_bench_and_the_report(
        toy: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert suite_main(["toy", "--attn", "se,eca", "--out", str(tmp_path / "alone"), "--no-progress"]) == 0
    assert set(pd.read_csv(tmp_path / "alone" / "toy.csv")["name_length"]) == {2, 3}
    with pytest.raises(SystemExit):
        suite_main(["--help"])
    assert "toy" in capsys.readouterr().out

    profile_file = tmp_path / "toy.toml"
    profile_file.write_text('description = "toy"\nattn = "se,eca"\n[[toy]]\n', encoding="utf-8")
    out = tmp_path / "bench"
    assert suite_main(["bench", "--profile", str(profile_file), "--stages", "toy", "--out", str(out),
                       "--no-progress"]) == 0
    assert (out / "raw" / "toy" / "toy_records.jsonl").is_file()
    summary = pd.read_csv(out / "summary.csv")
    assert dict(zip(summary["attn"], summary["toy_name_length"], strict=True)) == {"se": 2, "eca": 3}
    assert set(summary["stages"]) == {"toy"} and set(summary["status"]) == {"ok"}
    assert (out / "toy.csv").is_file()
    assert "| toy | ok |" in (out / "README.md").read_text(encoding="utf-8")


def test_an_unregistered_stage_is_unknown_to_profiles(tmp_path: Path) -> None:
    profile_file = tmp_path / "toy.toml"
    profile_file.write_text("[[toy]]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown keys"):
        load_profile(str(profile_file))


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("which", ["empty", "latency stage", "cost stage"])
def test_report_refuses_a_folder_that_is_not_a_profile_folder_and_changes_nothing(
        which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "folder"
    if which == "empty":
        folder.mkdir()
    else:
        stage = which.split()[0]
        source = PROJECT_ROOT / "reports" / "cpu" / "raw" / stage
        if not source.is_dir():
            pytest.skip("no committed reports/cpu/raw")
        folder.mkdir()
        for path in source.iterdir():
            if path.is_file():
                (folder / path.name).write_bytes(path.read_bytes())
    before = _snapshot(folder)
    assert suite_main(["report", "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and "profile folder" in err
    assert _snapshot(folder) == before


def test_report_refuses_a_folder_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert suite_main(["report", "--out", str(tmp_path / "absent")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "absent").exists()
