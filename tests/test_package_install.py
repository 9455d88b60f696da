"""The package as a user installs it: a wheel (not editable) in a fresh environment, its
``attnbench`` command run from a folder outside the checkout, without network.

The fresh environment is a venv without pip whose only link to this one is a ``.pth`` line
naming this environment's ``site-packages`` (for torch and the other dependencies); ``.pth``
files there (this checkout's editable install) are not processed, so ``suite`` can only come
from the wheel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "suite", "modules")


def _run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, f"{' '.join(map(str, command))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from a copy of the sources installed in it."""
    base = tmp_path_factory.mktemp("package")
    source = base / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            shutil.copy2(ROOT / name, source / name)
    wheels = base / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", wheels, source, cwd=base)
    env_dir = base / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=base).stdout.strip()
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (wheel,) = wheels.glob("attnbench-*.whl")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel, cwd=base)
    return env_dir


@pytest.mark.slow
def test_wheel_ships_its_resources(installed: Path, tmp_path: Path) -> None:
    """Profiles, the gate's baselines and the Callgrind shim are inside the installed package."""
    probe = (
        "import json, suite, suite.regress.cli as gate\n"
        "from suite.bench.profile import list_profiles\n"
        "print(json.dumps({'file': suite.__file__, 'profiles': list_profiles(),\n"
        "  'baselines': {c: p.is_file() for c, p in gate.DEFAULT_BASELINES.items()},\n"
        "  'shim': (gate.Path(gate.__file__).parent / 'callgrind_shim.c').is_file()}))"
    )
    facts = json.loads(_run(installed / "bin" / "python", "-c", probe, cwd=tmp_path).stdout)
    assert Path(facts["file"]).is_relative_to(installed)  # the wheel's copy, not the checkout
    assert {"smoke", "cpu", "gpu"} <= set(facts["profiles"])
    assert facts["baselines"] == {"ratio": True, "instructions": True}
    assert facts["shim"]


@pytest.mark.slow
def test_attnbench_command_runs_a_stage_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(installed / "bin" / "attnbench", "bench", "--profile", "smoke", "--stages", "cost", "--out", out,
         "--no-progress", cwd=tmp_path)
    summary = json.loads((out / "bench.json").read_text())
    assert [run["status"] for run in summary["runs"]] == ["ok"]
    assert summary["profile_file"] == "suite/profiles/smoke.toml"
    assert (out / "cost.csv").stat().st_size > 0


@pytest.mark.slow
def test_outputs_default_to_the_current_folder(installed: Path, tmp_path: Path) -> None:
    proc = _run(installed / "bin" / "attnbench", "bench", "--profile", "smoke", "--stages", "cost", "--dry-run",
                cwd=tmp_path)
    assert "--out reports/smoke/raw/cost" in proc.stdout
