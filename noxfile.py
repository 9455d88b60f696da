"""nox sessions: ``bench``, ``report``, ``tests``, ``quick``, ``lint``, ``regress``, ``benchmarks`` (``nox -s NAME``).

Sessions create their environments with uv when it is installed (``pip install "nox[uv]"``):
all of them share uv's package cache, so the first one downloads torch and the later ones link
it in seconds. Without uv they fall back to virtualenv and pip. Every session also runs in an
existing environment with ``nox --no-venv -s NAME`` (e.g. on a GPU machine without network,
where torch is preinstalled): installs are then skipped.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "uv|virtualenv"

# uv does not read pip's configuration. Where pip is configured (a mirror, local wheels, a
# constraints file, no index at all), these uv variables say the same, so both backends install
# the same packages.
_PIP_TO_UV = {
    "index-url": "UV_INDEX_URL",
    "extra-index-url": "UV_EXTRA_INDEX_URL",
    "find-links": "UV_FIND_LINKS",
    "constraint": "UV_CONSTRAINT",
    "no-index": "UV_NO_INDEX",
}
_PIP_SECTIONS = ("global", "install", ":env:")
"""The sections of ``pip config list`` that apply to ``pip install``, least specific first."""


def _pip_options() -> dict[str, list[str]]:
    """``{option: values}`` as ``pip install`` sees them: a more specific section (install over
    global, the environment over both) replaces a less specific one's value."""
    try:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                                text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    chosen: dict[str, tuple[int, list[str]]] = {}
    for line in listed.splitlines():
        key, sep, raw = line.partition("=")
        section, _, option = key.rpartition(".")
        if not sep or option not in _PIP_TO_UV or section not in _PIP_SECTIONS:
            continue
        try:
            value = ast.literal_eval(raw.strip())  # pip prints each value with repr()
        except (ValueError, SyntaxError):
            continue
        rank = _PIP_SECTIONS.index(section)
        if option not in chosen or rank >= chosen[option][0]:
            chosen[option] = (rank, str(value).split())
    return {option: values for option, (_, values) in chosen.items()}


def _pip_settings_for_uv() -> dict[str, str]:
    """pip's index, extra indexes, find-links, constraints and no-index as uv variables;
    variables already set are kept."""
    settings: dict[str, str] = {}
    for option, values in _pip_options().items():
        var = _PIP_TO_UV[option]
        if var in os.environ or not values:
            continue
        if option == "no-index":
            if values[0].lower() in ("1", "true", "yes", "on"):
                settings[var] = "1"
            continue
        settings[var] = ("," if var == "UV_FIND_LINKS" else " ").join(dict.fromkeys(values))
    if "UV_EXTRA_INDEX_URL" in settings or "UV_INDEX_URL" in settings:
        # pip takes the newest version from any index; uv by default stops at the first index
        # that has the package, which can pick older releases from a partial mirror
        settings.setdefault("UV_INDEX_STRATEGY", os.environ.get("UV_INDEX_STRATEGY", "unsafe-best-match"))
    return settings


def _install(session: nox.Session, *args: str) -> None:
    """Install into the session's virtualenv; skip in ``--no-venv`` mode."""
    if session.venv_backend == "none":
        session.log("no virtualenv: using the current environment as it is")
        return
    env = _pip_settings_for_uv() if session.venv_backend == "uv" else {}
    if env:
        session.log("uv: following pip's configuration: " + ", ".join(sorted(env)))
    session.install(*args, env=env)


@nox.session
def bench(session: nox.Session) -> None:
    """Every stage for a profile, then the report: ``nox -s bench [-- --profile smoke --attn 'se*']``.

    Arguments after ``--`` go to ``python -m suite bench`` (``--help`` lists them); the default
    is the cpu profile into ``reports/cpu``. Installs the runtimes the latency stage measures
    beside eager (``.[runtimes]``: ONNX Runtime); a runtime that is missing gives rows with status
    ``unsupported``, not a failed bench."""
    _install(session, "-e", ".[runtimes]")
    session.run("python", "-m", "suite", "bench", *session.posargs)


@nox.session
def report(session: nox.Session) -> None:
    """Re-render CSVs, figures and README from existing raw results, measuring nothing:
    ``nox -s report [-- --out reports/cpu]``."""
    _install(session, "-e", ".")
    session.run("python", "-m", "suite", "report", *(session.posargs or ["--out", "reports/cpu"]))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite: ``nox -s tests [-- PYTEST_ARGS]``."""
    _install(session, "-e", ".[test,runtimes]")
    session.run("python", "-m", "pytest", *(session.posargs or ["-q"]))


@nox.session
def quick(session: nox.Session) -> None:
    """The fast tier, what a contributor runs before each commit: every test not marked ``slow``
    (under 2 minutes on 2 cores once the environment exists): ``nox -s quick [-- PYTEST_ARGS]``.
    ``nox -s tests`` is the full suite, the one CI runs."""
    _install(session, "-e", ".[test,runtimes]")
    session.run("python", "-m", "pytest", "-q", "-m", "not slow", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the project."""
    _install(session, "ruff>=0.5")
    session.run("ruff", "check", "modules", "suite", "tests", "benchmarks", "noxfile.py")


@nox.session
def regress(session: nox.Session) -> None:
    """Regression gate: ``nox -s regress [-- GATE_ARGS]`` (``python -m suite regress --help``);
    ``-- --counter instructions`` counts instructions under Callgrind instead of timing ratios.

    Without arguments: the committed baseline of this machine class, or, where none matches, the
    working tree against ``HEAD`` measured side by side (A/B); ``-- --against main`` compares with
    another revision on any machine. Fails on a regression, a case that could not be measured, or
    an explicit ``--baseline`` from another machine class (unless ``--on-mismatch warn``); nox
    itself exits 1 for any of them, so run ``python -m suite regress`` for the gate's own exit
    codes (1, 2, 3; see ``--help``). ``-- --update-baseline --baseline FILE --repeats 5`` takes a
    baseline into FILE. Installs pytest-benchmark beside (``.[regress]``), whose ``compare``
    reads the gate's ``benchmark*.json``.
    """
    _install(session, "-e", ".[regress]")
    session.run("python", "-m", "suite", "regress", *session.posargs)


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Run one script of ``benchmarks/`` with what it needs (timm, scipy):
    ``nox -s benchmarks -- SCRIPT [ARGS]``, e.g. ``-- instruction_gate_check.py -n 20``."""
    scripts = sorted(p.name for p in Path("benchmarks").glob("*.py") if "__main__" in p.read_text())
    if not session.posargs or session.posargs[0] not in scripts:
        got = session.posargs[0] if session.posargs else "nothing"
        session.error(f"name a script of benchmarks/ first (got {got}); one of: {', '.join(scripts)}")
    _install(session, "-e", ".[test]")
    script, *args = session.posargs
    session.run("python", str(Path("benchmarks") / script), *args)
