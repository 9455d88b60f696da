"""The A/B regression gate: the working tree (head) against a git revision (base), measured side
by side on one machine in one job (``python -m suite regress --against REF``).

A stored baseline holds only on the machine class that took it: between two 2-core VMs of
different CPUs the module/conv ratios of the same code moved by 30% (median) and up to 3x. So
the field measures both sides where it judges: asv's ``continuous``, pyperf's ``compare_to``,
CodSpeed's base-branch runs. Here:

**Sides.** Base is materialised in a temporary folder (``git archive`` of REF, or a copy of
another checkout's files with ``--against-path``); head is a copy of the working tree's files
(tracked and untracked, not ignored), so an edit made while the gate runs is not half-measured.
The user's tree, index and branches are only read. Each side runs in its own processes, started
in its own folder with that folder first on ``PYTHONPATH``: ``modules`` and ``suite`` of the base
are the base's (:func:`import_origins` checks it). A revision older than the worker protocol
(``suite.regress.cases:gate_case``, ``suite.timing.worker``) is refused with that reason. A
repository that is not a checkout of attnbench but brings its own attention types as plugins
(``--plugin my_project.attention``) is measured the same way, each side's plugins from its own
tree, with the installed attnbench on both sides.

**Ratio counter.** ``rounds`` rounds; in each, both sides start a new worker server (the two
importing torch at once, before anything is measured), and each side's worker, forked from it,
measures every case exactly as the committed-baseline gate does (the case's ``module / 3x3
conv`` ratio, :mod:`suite.regress.cases`). The sides alternate which goes first from round to
round, so a slow period of the machine touches both. Per case the change is ``head / base`` of
the same round, and its centre and 95% interval are Student's t on the log of the per-round
changes (:func:`suite.timing.stats.across_rounds`). Verdict (:func:`ratio_verdict`): a
**regression** when the interval lies above 0 *and* the centre is above ``threshold``; **faster**
the mirror image; otherwise ok. The interval alone would flag about 2.5% of unchanged cases; the
threshold is set above what unchanged code shows (``reports/regress/ab_gate_ratio.md``).

**Instruction counter.** Both sides are counted under Callgrind at once (one valgrind process
each, one per core; counts do not depend on the neighbour), in the same case order, from folders
of the same path length, so their contexts match. A case regresses when ``head / base - 1``
exceeds the threshold, which lies above the count noise measured between two sides of identical
code.

A case whose attention type only one side's zoo has is a row ``new`` (head only) or ``removed``
(base only); the rest are judged.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .callgrind import Counts
from .cases import EARLIER_TIMER, WORKER_RECORD_KEYS, GateCase, RegressSettings, case_id, gate_job

if TYPE_CHECKING:
    from ..timing.pool import RoundWorkers

__all__ = [
    "ABCase",
    "INSTALLED",
    "PROTOCOL_FILES",
    "Zoo",
    "carries_harness",
    "check_protocol",
    "checkout_root",
    "only_one_side",
    "side_benchmark_facts",
    "AB_THRESHOLDS",
    "AB_VISITS",
    "DEFAULT_ROUNDS",
    "RULES",
    "RevisionError",
    "Side",
    "Sides",
    "import_origins",
    "format_ab_table",
    "instruction_verdict",
    "judge_instructions",
    "judge_ratios",
    "materialise",
    "measure_instruction_sides",
    "measure_ratio_sides",
    "ratio_verdict",
    "resolve_zoo",
    "side_settings",
]

DEFAULT_ROUNDS = 10
"""Ratio counter: rounds (fresh worker processes) per side."""
AB_VISITS = 1
"""Ratio counter: measurements per case in one worker (``--visits``); the spread that matters is
between processes, so an A/B run spends its time on rounds instead."""
AB_THRESHOLDS: dict[str, float] = {"ratio": 0.05, "instructions": 0.01}
"""Per counter, the smallest change (``head / base - 1``) judged a regression by default; see
the module docstring, ``reports/regress/ab_gate_ratio.md`` and ``ab_gate_instructions.md`` for
the measurements behind them."""
INSTALLED = Path(__file__).resolve().parents[2]
"""Where the running attnbench's ``modules`` and ``suite`` lie: what a project of plugins is
measured with."""
PROTOCOL_FILES = ("modules/__init__.py", "suite/timing/worker.py", "suite/regress/cases.py",
                  "suite/regress/callgrind_worker.py")
"""What a side's tree must hold for the gate to measure it (with ``gate_case`` in ``cases.py``)."""


RULES: dict[str, str] = {
    "ratio": "per case, change = head / base - 1 of the same round's ratios; centre and 95% interval: Student's t "
             "on the log of the per-round changes; regression when the interval lies above 0 and the change "
             "above +{threshold:.1%}; faster the mirror image",
    "instructions": "per case, change = head / base - 1 of the instructions per call (median of the counted "
                    "repetitions); regression above +{threshold:.1%}, faster below -{threshold:.1%}",
}
"""The verdict rule per counter, as ``verdict.json`` states it."""


class RevisionError(ValueError):
    """A revision or folder that cannot be a side: unknown, not a git checkout, too old."""


@dataclass(frozen=True)
class Side:
    """One side of an A/B run: ``name`` (``head`` or ``base``), the folder it runs from (a
    temporary copy), its commit (``-dirty`` when uncommitted changes were copied with it), what
    the user named (``working tree``, ``HEAD~1``, a folder), and whether the tree carries the
    harness (a checkout of attnbench: its ``modules`` and ``suite`` are measured) or only a
    project's own plugins (measured with the installed attnbench, the same on both sides)."""

    name: str
    root: Path
    revision: str
    named: str
    harness: bool = True

    @property
    def short(self) -> str:
        """The commit abbreviated, with ``-dirty`` kept."""
        return self.revision[:12] + ("-dirty" if self.revision.endswith("-dirty") else "")

    def as_dict(self) -> dict[str, str]:
        """What ``verdict.json`` says of this side (never its temporary folder)."""
        return {"side": self.name, "named": self.named, "revision": self.revision,
                "code": "attnbench checkout" if self.harness else "plugins, with the installed attnbench"}


@dataclass(frozen=True)
class Sides:
    """Both sides of an A/B run; iterating gives head, then base."""

    head: Side
    base: Side

    def __iter__(self) -> Iterator[Side]:
        return iter((self.head, self.base))


def _git(repo: Path, *args: str, binary: bool = False) -> Any:
    """``git -C repo ARGS``' output (bytes when ``binary``); :class:`RevisionError` when it fails.
    ``--no-optional-locks``: ``git status`` then leaves the user's index as it is."""
    try:
        proc = subprocess.run(["git", "--no-optional-locks", "-C", str(repo), *args], capture_output=True,
                              check=False, timeout=300)
    except FileNotFoundError as exc:
        raise RevisionError("git is not installed: the A/B gate reads the revisions with git") from exc
    except subprocess.TimeoutExpired as exc:
        raise RevisionError(f"git {' '.join(args)} took more than 300 s in {repo}") from exc
    if proc.returncode != 0:
        raise RevisionError(proc.stderr.decode(errors="replace").strip() or f"git {' '.join(args)} failed")
    return proc.stdout if binary else proc.stdout.decode().strip()


def checkout_root(folder: Path) -> Path:
    """The top folder of the git checkout ``folder`` lies in; :class:`RevisionError` otherwise."""
    if not Path(folder).is_dir():
        raise RevisionError(f"{folder} is not a folder")
    try:
        return Path(_git(Path(folder), "rev-parse", "--show-toplevel"))
    except RevisionError as exc:
        raise RevisionError(f"{folder} is not a git checkout ({exc})") from None


def _copy_checkout(repo: Path, dest: Path) -> str:
    """Copy the checkout's files (tracked and untracked, not ignored) to ``dest``; its commit,
    with ``-dirty`` when it has uncommitted changes."""
    listed = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard", binary=True)
    for name in sorted({n for n in listed.decode().split("\0") if n}):
        source = repo / name
        if source.is_file():  # a deleted file is still in the index
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    commit = _git(repo, "rev-parse", "HEAD")
    dirty = bool(_git(repo, "status", "--porcelain"))
    return commit + ("-dirty" if dirty else "")


def _export_revision(repo: Path, ref: str, dest: Path) -> str:
    """Extract the files of revision ``ref`` of ``repo`` into ``dest``; its commit."""
    try:
        commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except RevisionError:
        commit = ""
    if not commit:
        raise RevisionError(f"--against {ref!r}: not a revision of {repo.name} (a commit, branch or tag; "
                            "in a shallow clone, fetch the history first: git fetch --unshallow)")
    archive = _git(repo, "archive", "--format=tar", commit, binary=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
                tar.extractall(dest, filter="data")
            else:
                tar.extractall(dest)
    except tarfile.TarError as exc:
        raise RevisionError(f"--against {ref!r}: its files could not be extracted ({exc})") from exc
    return commit


def carries_harness(root: Path) -> bool:
    """Whether the tree at ``root`` is a checkout of attnbench (its own zoo registry or gate)
    rather than a project that brings attention types as plugins."""
    return (root / "modules/_registry.py").is_file() or (root / "suite/regress").is_dir()


def check_protocol(side: Side) -> None:
    """:class:`RevisionError` when ``side``'s tree predates the gate's worker protocol."""
    if not side.harness:
        return
    missing = [name for name in PROTOCOL_FILES if not (side.root / name).is_file()]
    cases = side.root / "suite/regress/cases.py"
    if not missing and "def gate_case" not in cases.read_text(errors="replace"):
        missing.append("suite/regress/cases.py:gate_case")
    if missing:
        raise RevisionError(f"{side.named} ({side.revision[:12]}) predates the gate's worker protocol "
                            f"(missing {', '.join(missing)}); pick a later revision")


@contextlib.contextmanager
def materialise(repo: Path, *, against: str | None = None, against_path: Path | None = None) -> Iterator[Sides]:
    """Both sides in a temporary folder, removed afterwards: head from the working tree of
    ``repo``, base from revision ``against`` of ``repo`` or from the checkout ``against_path``.
    Both folders' paths have the same length (the instruction counter's contexts match)."""
    if (against is None) == (against_path is None):
        raise ValueError("name exactly one of against (a revision) and against_path (a folder)")
    repo = checkout_root(repo)
    other = checkout_root(against_path) if against_path is not None else None
    with tempfile.TemporaryDirectory(prefix="attnbench-ab-") as tmp:
        head_root, base_root = Path(tmp) / "head", Path(tmp) / "base"
        head_root.mkdir()
        base_root.mkdir()
        harness = carries_harness(repo)
        head = Side("head", head_root, _copy_checkout(repo, head_root), "working tree", harness)
        if other is not None:
            base = Side("base", base_root, _copy_checkout(other, base_root), str(against_path), harness)
        else:
            assert against is not None
            base = Side("base", base_root, _export_revision(repo, against, base_root), against, harness)
        for side in (head, base):
            check_protocol(side)
        yield Sides(head, base)


def side_settings(settings: RegressSettings, side: Side, repo: Path,
                  drop: Iterable[str] = ()) -> RegressSettings:
    """``settings`` for ``side``: a plugin file inside ``repo`` is taken from the side's copy;
    the specs in ``drop`` (plugins this side cannot load) are left out."""
    from ..plugins import parse_spec

    plugins = []
    for spec in (s for s in settings.plugins if s not in set(drop)):
        plugin = parse_spec(spec)
        path = Path(plugin.module).resolve()
        if plugin.module.endswith(".py") and path.is_relative_to(repo.resolve()):
            plugin = replace(plugin, module=str(side.root / path.relative_to(repo.resolve())))
        plugins.append(plugin.as_spec())
    return replace(settings, plugins=tuple(plugins))


def _side_env(side: Side, threads: int, allocator: str, repo: Path) -> dict[str, str]:
    """The environment of ``side``'s processes: its tree first on the path; entries of the
    user's ``PYTHONPATH`` inside ``repo`` moved to the side's copy (so nothing of the live tree
    is imported); for a project of plugins, the installed attnbench after them."""
    from ..plugins import PLUGINS_ENV
    from ..timing.pool import worker_environment

    env = worker_environment(threads, allocator, root=side.root)
    inherited = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    path = [str(side.root)]
    for entry in inherited:
        resolved = Path(entry).resolve()
        if resolved.is_relative_to(repo.resolve()):
            entry = str(side.root / resolved.relative_to(repo.resolve()))
        path.append(entry)
    if not side.harness:
        path.append(str(INSTALLED))
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    env.pop(PLUGINS_ENV, None)  # each side loads its own copies (its settings' plugins)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


_ZOO_SCRIPT = """
import importlib.util, json, sys
origins = {name: importlib.util.find_spec(name).origin for name in ("modules", "suite")}
from suite.plugins import load_plugins
unloadable = {}
for spec in json.loads(sys.argv[2]):
    try:
        load_plugins([spec])
    except Exception as exc:
        unloadable[spec] = f"{type(exc).__name__}: {exc}"
import modules
patterns = [p.strip() for p in sys.argv[1].split(",") if p.strip()]
print(json.dumps({"origins": origins, "unloadable": unloadable,
                  "matched": {p: modules.list_attention(p) for p in patterns}}))
"""
ZOO_TIMEOUT_S = 600.0


def _query_zoo(side: Side, patterns: str, plugins: Sequence[str], repo: Path) -> dict[str, Any]:
    """What ``side``'s registry holds: where it imported ``modules`` and ``suite`` from, the
    names each pattern matches there, and the plugins it could not load (with why)."""
    env = _side_env(side, 1, "inherited", repo)
    try:
        proc = subprocess.run([sys.executable, "-c", _ZOO_SCRIPT, patterns, json.dumps(list(plugins))],
                              cwd=side.root, env=env, capture_output=True, text=True, timeout=ZOO_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise RevisionError(f"the {side.name} side ({side.named}) did not list its zoo in {ZOO_TIMEOUT_S:.0f} s") from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RevisionError(f"the {side.name} side ({side.named}) could not list its zoo: "
                            f"{proc.stderr.strip()[-1500:]}")
    return json.loads(lines[-1])


def import_origins(side: Side, origins: Mapping[str, str]) -> None:
    """:class:`RevisionError` unless ``modules`` and ``suite`` came from ``side``'s folder (a
    checkout of attnbench) or, for a project of plugins, from the attnbench running now."""
    expected = side.root if side.harness else INSTALLED
    for name, origin in origins.items():
        if expected.resolve() not in Path(origin).resolve().parents:
            where = "its tree" if side.harness else "the installed attnbench"
            raise RevisionError(f"the {side.name} side imported {name} from outside {where} ({origin})")


@dataclass
class Zoo:
    """What both sides measure: the attention names both zoos have, ``{name: "new" | "removed"}``
    of those only one has, and per side the plugins it could not load (``{spec: why}``), whose
    types are then new or removed."""

    names: list[str]
    only: dict[str, str]
    unloadable: dict[str, dict[str, str]]


def resolve_zoo(sides: Sides, patterns: str, settings: RegressSettings, repo: Path) -> Zoo:
    """Each side resolves ``patterns`` with its own registry (and the plugins it can load); a
    pattern that matches nothing on either side, or no pattern at all, is a :class:`ValueError`."""
    if not [p for p in patterns.split(",") if p.strip()]:
        raise ValueError(f"--attn: no pattern given ({patterns!r})")
    with ThreadPoolExecutor(2) as pool:
        head, base = pool.map(lambda side: _query_zoo(side, patterns, side_settings(settings, side, repo).plugins,
                                                      repo), list(sides))
    for side, listed in zip(sides, (head, base), strict=True):
        import_origins(side, listed["origins"])
    empty = [p for p in head["matched"] if not head["matched"][p] and not base["matched"].get(p)]
    if empty:
        raise ValueError(f"--attn: {', '.join(map(repr, empty))} matches no attention type in either side's zoo")
    ordered: list[str] = []
    for listed in (head, base):
        for names in listed["matched"].values():
            ordered += [n for n in names if n not in ordered]
    in_head = {n for names in head["matched"].values() for n in names}
    in_base = {n for names in base["matched"].values() for n in names}
    only = {n: "new" for n in ordered if n not in in_base} | {n: "removed" for n in ordered if n not in in_head}
    unloadable = {"head": dict(head.get("unloadable", {})), "base": dict(base.get("unloadable", {}))}
    return Zoo([n for n in ordered if n not in only], only, unloadable)


@dataclass
class ABCase:
    """One case's A/B result: the base's and head's values (ratio: geometric mean over rounds;
    instructions: per call), the change ``head / base - 1`` with its 95% interval (ratio
    counter), the rounds judged and the verdict (ok, regression, faster, new, removed, error, incomparable)."""

    case: str
    base: float | None = None
    head: float | None = None
    change: float | None = None
    low: float | None = None
    high: float | None = None
    rounds: int = 0
    verdict: str = "ok"
    message: str = ""
    per_round: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The case's row of ``verdict.json``."""
        return {"case": self.case, "base": self.base, "head": self.head, "change": self.change,
                "change_low": self.low, "change_high": self.high, "rounds": self.rounds,
                "change_per_round": self.per_round, "verdict": self.verdict, "message": self.message}


def ratio_verdict(change: float, low: float, high: float, threshold: float) -> str:
    """``regression`` when the interval ``[low, high]`` of ``head / base - 1`` lies above 0 and
    ``change`` exceeds ``threshold``; ``faster`` the mirror image; ``ok`` otherwise (also when
    there is no interval: NaN bounds)."""
    if low > 0 and change > threshold:
        return "regression"
    if high < 0 and change < -threshold:
        return "faster"
    return "ok"


def instruction_verdict(change: float, threshold: float) -> str:
    """``regression`` above ``+threshold``, ``faster`` below ``-threshold``, else ``ok``."""
    return "regression" if change > threshold else "faster" if change < -threshold else "ok"


def judge_ratios(head: Mapping[str, Sequence[dict[str, Any]]], base: Mapping[str, Sequence[dict[str, Any]]],
                 threshold: float) -> list[ABCase]:
    """Verdict per case from each side's per-round results (``{case: [fields of round 0, ...]}``,
    fields with ``status`` and ``ratio``). A case that failed in a round on either side is an
    ``error`` row naming the side and why."""
    from ..timing.stats import across_rounds

    results = []
    for case in head:
        failed = [(name, fields) for name, rounds in (("head", head[case]), ("base", base.get(case, [])))
                  for fields in rounds if fields.get("status") != "ok"]
        if failed:
            name, fields = failed[0]
            results.append(ABCase(case, verdict="error",
                                  message=f"{name}: {fields.get('status')}: {fields.get('message', '')}"[:500]))
            continue
        timers = {name: {fields.get("timer", EARLIER_TIMER) for fields in rounds}
                  for name, rounds in (("head", head[case]), ("base", base.get(case, [])))}
        if timers["head"] != timers["base"]:  # a revision from before the gate's timer changed
            results.append(ABCase(case, verdict="incomparable", message=(
                f"the sides time their ratios differently (head: {', '.join(sorted(timers['head']))}; base: "
                f"{', '.join(sorted(timers['base']))}); compare with a revision that has the same timer, or "
                "count instructions (--counter instructions)")))
            continue
        pairs = [(h["ratio"], b["ratio"]) for h, b in zip(head[case], base[case], strict=False)]
        interval = across_rounds([h / b for h, b in pairs])
        change, low, high = interval.center - 1, interval.low - 1, interval.high - 1
        results.append(ABCase(
            case, base=across_rounds([b for _, b in pairs]).center, head=across_rounds([h for h, _ in pairs]).center,
            change=change, low=low, high=high, rounds=len(pairs),
            verdict=ratio_verdict(change, low, high, threshold) if len(pairs) >= 2 else "error",
            message="" if len(pairs) >= 2 else "fewer than 2 rounds on both sides",
            per_round=[h / b - 1 for h, b in pairs]))
    return results


def judge_instructions(head: Mapping[str, Mapping[str, Any]], base: Mapping[str, Mapping[str, Any]],
                       errors: Mapping[str, str], threshold: float) -> list[ABCase]:
    """Verdict per case from each side's counts (``{case: facts with instructions}``);
    ``errors``: ``{case: "side: why"}`` of the cases that could not be counted."""
    results = [ABCase(case, verdict="error", message=why) for case, why in errors.items()]
    for case in sorted((set(head) ^ set(base)) - set(errors)):
        missing = "base" if case in head else "head"
        results.append(ABCase(case, verdict="error", message=f"{missing}: Callgrind counted no such case"))
    for case, facts in head.items():
        if case in errors or case not in base:
            continue
        h, b = float(facts["instructions"]), float(base[case]["instructions"])
        change = h / b - 1
        results.append(ABCase(case, base=b, head=h, change=change, rounds=1,
                              verdict=instruction_verdict(change, threshold)))
    return results


def only_one_side(names: Mapping[str, str], settings: RegressSettings) -> list[ABCase]:
    """Rows for the cases of attention types that only one side's zoo has."""
    return [ABCase(case_id(name, mode, settings), verdict=status,
                   message="only the working tree's zoo has this type" if status == "new"
                   else "only the base's zoo has this type")
            for name, status in names.items() for mode in settings.mode]


def _start_workers(sides: Sides, threads: int, timeout_s: float, repo: Path,
                   stack: contextlib.ExitStack) -> dict[str, RoundWorkers]:
    """One worker server per side, both importing torch at once (one per core)."""
    from ..timing.pool import RoundWorkers

    def start(side: Side) -> RoundWorkers:
        env = _side_env(side, threads, "inherited", repo)
        return stack.enter_context(RoundWorkers(isolation="fork", servers=1, env=env, timeout_s=timeout_s,
                                                cwd=side.root))

    with ThreadPoolExecutor(2) as pool:
        futures = {side.name: pool.submit(start, side) for side in sides}
        return {name: future.result() for name, future in futures.items()}


def measure_ratio_sides(sides: Sides, settings: Mapping[str, RegressSettings], *, rounds: int,
                        timeout_s: float, repo: Path, on_job: Callable[[str, int], None] | None = None,
                        ) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{side: {case: [fields of each round]}}``: ``rounds`` rounds; in each, both sides start a
    new worker server (:class:`suite.timing.pool.RoundWorkers`, the two importing torch at once,
    before anything is measured), then each side's worker measures every case, the side that goes
    first alternating. A new server per round: a server's memory layout, inherited by each worker
    it forks, moved all 8 cases of one side by 1-3% in the same direction on unchanged code when
    one server served every round; started anew, that effect is part of the rounds' spread.
    ``settings``: per side (their plugins differ)."""
    first = settings["head"]
    cases = [GateCase(name, mode, case_id(name, mode, first)) for name, mode in first.cases()]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s.name: {c.case: [] for c in cases} for s in sides}
    for index in range(rounds):
        with contextlib.ExitStack() as stack:
            workers = _start_workers(sides, first.threads, timeout_s, repo, stack)
            for name in ("head", "base") if index % 2 == 0 else ("base", "head"):
                workers[name].run(cases, gate_job(settings[name]),
                                  lambda case, fields, name=name: results[name][case.case].append(fields))
                if on_job is not None:
                    on_job(name, index)
    return results


def measure_instruction_sides(sides: Sides, settings: Mapping[str, RegressSettings], out: Path,
                              repo: Path) -> dict[str, Counts]:
    """``{side: Counts}``: both sides counted under Callgrind at once, in the same order, from
    work folders of equal path length (``out`` is made absolute: the processes start in their
    sides' folders)."""
    from . import callgrind

    def count(side: Side) -> Counts:
        return callgrind.collect(settings[side.name], out.resolve() / f"callgrind-{side.name}", rotate=0,
                                 root=side.root, label=f"callgrind {side.name}",
                                 env=_side_env(side, settings[side.name].threads, "steady", repo))

    with ThreadPoolExecutor(2) as pool:
        futures = {side.name: pool.submit(count, side) for side in sides}
        return {name: future.result() for name, future in futures.items()}


def side_benchmark_facts(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One side's facts of a case over its rounds, in the shape the gate's ``benchmark.json``
    stores (the ratio as the geometric mean, the module's per-round medians as its samples)."""
    from ..timing.stats import across_rounds

    ok = [r for r in rounds if r.get("status") == "ok"]
    facts = {k: v for k, v in ok[0].items() if k not in WORKER_RECORD_KEYS}
    facts["ratio"] = across_rounds([r["ratio"] for r in ok]).center
    facts["ratio_rounds"] = [r["ratio"] for r in ok]
    facts["module_ms_repeats"] = [r["module_ms"] for r in ok]
    facts["module_ms"] = statistics.median(facts["module_ms_repeats"])
    facts["reference_ms"] = statistics.median(r["reference_ms"] for r in ok)
    facts["rounds"] = len(ok)
    return facts


def format_ab_table(results: Sequence[ABCase], counter: str, threshold: float) -> str:
    """The A/B verdict table: base, head, change with its 95% interval (ratio) and verdict."""
    width = 12 if counter == "instructions" else 9

    def value(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}" if counter == "instructions" else f"{v:.4f}"

    header = (f"{'case':32s} {'base':>{width}s} {'head':>{width}s} {'change':>8s} {'95% interval':>17s}"
              f" {'rounds':>6s}  verdict")
    lines = [header, "-" * len(header)]
    for r in results:
        change = "-" if r.change is None else f"{r.change:+.1%}"
        interval = ("-" if r.low is None or r.high is None or math.isnan(r.low)
                    else f"[{r.low:+.1%}, {r.high:+.1%}]")
        why = f": {r.message}" if r.message else ""
        lines.append(f"{r.case:32s} {value(r.base):>{width}s} {value(r.head):>{width}s} {change:>8s} "
                     f"{interval:>17s} {r.rounds or '-':>6}  {r.verdict}{why}")
    lines.append(f"({RULES[counter].format(threshold=threshold)})")
    return "\n".join(lines)
