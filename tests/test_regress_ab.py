"""The A/B regression gate (``python -m suite regress --against REF``): the sides materialised
from git without touching the user's tree, the verdict rule on synthetic rounds, new and removed
types, bad input, the fallback to A/B where no committed baseline matches, pytest-benchmark's
own ``compare`` on both sides' files, and one real A/B run that catches a planted slowdown."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from suite.errors import UsageError
from suite.regress import ab, cli
from suite.regress.ab import ABCase, RevisionError, Side, Sides
from suite.regress.cases import EARLIER_TIMER, GATE_TIMER, RegressSettings
from suite.regress.gate import SOFT_KEYS, machine_mismatch, machine_warnings

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = {
    "modules/__init__.py": "",
    "suite/__init__.py": "",
    "suite/timing/worker.py": "",
    "suite/regress/cases.py": "def gate_case(raw, job):\n    pass\n",
    "suite/regress/callgrind_worker.py": "",
}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> dict[str, object]:
    """A small git checkout: an old commit without the worker protocol, then one with it, and
    an uncommitted edit in the working tree."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "t")
    old = _commit(root, {"README.md": "old\n"}, "old")
    new = _commit(root, {**PROTOCOL, "modules/se.py": "SLOW = 0\n"}, "protocol")
    (root / "modules/se.py").write_text("SLOW = 1\n")  # uncommitted
    return {"root": root, "old": old, "new": new}


def _state(root: Path) -> tuple[str, ...]:
    return (_git(root, "status", "--porcelain"), _git(root, "rev-parse", "HEAD"), _git(root, "branch", "-a"),
            _git(root, "stash", "list"), (root / "modules/se.py").read_text())


def test_materialise_copies_the_working_tree_and_exports_the_revision_without_touching_the_repo(repo) -> None:
    root = repo["root"]
    before = _state(root)
    with ab.materialise(root, against="HEAD") as sides:
        assert (sides.head.root / "modules/se.py").read_text() == "SLOW = 1\n"  # the uncommitted edit
        assert (sides.base.root / "modules/se.py").read_text() == "SLOW = 0\n"  # the revision's file
        assert sides.head.revision == f"{repo['new']}-dirty" and sides.base.revision == repo["new"]
        assert sides.base.named == "HEAD" and sides.head.named == "working tree"
        assert len(str(sides.head.root)) == len(str(sides.base.root))  # same context for Callgrind
        assert not (sides.head.root / ".git").exists()
        kept = sides.head.root.parent
    assert not kept.exists()  # removed afterwards
    assert _state(root) == before


def test_a_project_of_plugins_is_measured_with_the_installed_harness(tmp_path: Path) -> None:
    """A repository without attnbench's zoo and gate: each side is its plugins' tree, and the
    ``modules`` and ``suite`` it imports must be the running attnbench's."""
    root = tmp_path / "project"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "t")
    _commit(root, {"my_project/__init__.py": "", "my_project/attention.py": "# registers types\n"}, "project")
    with ab.materialise(root, against="HEAD") as sides:
        assert not sides.head.harness and not sides.base.harness
        assert (sides.base.root / "my_project/attention.py").is_file()
        ab.import_origins(sides.base, {"modules": str(ROOT / "modules/__init__.py")})
        with pytest.raises(RevisionError, match="outside the installed attnbench"):
            ab.import_origins(sides.base, {"modules": str(sides.base.root / "modules/__init__.py")})


def test_an_unknown_revision_is_a_clear_error(repo) -> None:
    before = _state(repo["root"])
    with pytest.raises(RevisionError, match="'no-such-branch': not a revision"), \
            ab.materialise(repo["root"], against="no-such-branch"):
        pass
    assert _state(repo["root"]) == before


def test_a_revision_older_than_the_worker_protocol_is_refused_with_the_reason(repo) -> None:
    with pytest.raises(RevisionError, match="predates the gate's worker protocol"), \
            ab.materialise(repo["root"], against=repo["old"]):
        pass


def test_a_folder_that_is_not_a_git_checkout_is_a_clear_error(repo, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(RevisionError, match="is not a git checkout"), \
            ab.materialise(repo["root"], against_path=plain):
        pass
    with pytest.raises(RevisionError, match="is not a folder"), \
            ab.materialise(repo["root"], against_path=tmp_path / "missing"):
        pass


def test_against_path_copies_the_other_checkouts_working_tree(repo, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(repo["root"]), str(other)], check=True)
    (other / "modules/se.py").write_text("SLOW = 2\n")
    with ab.materialise(repo["root"], against_path=other) as sides:
        assert (sides.base.root / "modules/se.py").read_text() == "SLOW = 2\n"
        assert sides.base.revision.endswith("-dirty")


def test_side_settings_takes_a_plugin_file_inside_the_repository_from_the_sides_copy(tmp_path: Path) -> None:
    repo_root = tmp_path / "repo"
    side = Side("base", tmp_path / "ab" / "base", "abc", "HEAD")
    settings = RegressSettings(plugins=(f"slow={repo_root / 'benchmarks/planted.py'}:Slow", "pkg.module",
                                        str(tmp_path / "elsewhere.py")))
    mapped = ab.side_settings(settings, side, repo_root).plugins
    assert mapped == (f"slow={side.root / 'benchmarks/planted.py'}:Slow", "pkg.module", str(tmp_path / "elsewhere.py"))


# -- the verdict rule on synthetic rounds ------------------------------------------------------------

def test_ratio_verdict_needs_the_interval_above_zero_and_the_change_above_the_threshold() -> None:
    assert ab.ratio_verdict(0.10, 0.04, 0.16, 0.05) == "regression"
    assert ab.ratio_verdict(0.04, 0.01, 0.07, 0.05) == "ok"  # significant but below the threshold
    assert ab.ratio_verdict(0.08, -0.01, 0.17, 0.05) == "ok"  # large but not significant
    assert ab.ratio_verdict(-0.10, -0.16, -0.04, 0.05) == "faster"
    assert ab.ratio_verdict(0.10, math.nan, math.nan, 0.05) == "ok"  # no interval: never a regression


def _rounds(ratios: list[float], status: str = "ok") -> list[dict]:
    return [{"status": status, "ratio": r, "message": "boom" if status != "ok" else ""} for r in ratios]


def test_judge_ratios_pairs_the_rounds_and_flags_a_real_slowdown_only() -> None:
    base = [0.100, 0.104, 0.098, 0.101, 0.103, 0.099]
    noise = [1.01, 0.99, 1.02, 0.98, 1.00, 1.01]
    head = {"same|forward|b2c64s28": _rounds([b * n for b, n in zip(base, noise, strict=True)]),
            "slow|forward|b2c64s28": _rounds([b * n * 1.10 for b, n in zip(base, noise, strict=True)])}
    bases = {case: _rounds(base) for case in head}
    results = {r.case: r for r in ab.judge_ratios(head, bases, threshold=0.05)}
    same, slow = results["same|forward|b2c64s28"], results["slow|forward|b2c64s28"]
    assert same.verdict == "ok" and same.low < 0 < same.high and same.rounds == 6
    assert slow.verdict == "regression" and slow.change == pytest.approx(0.10, abs=0.01) and slow.low > 0.05
    assert slow.per_round == pytest.approx([1.10 * n - 1 for n in noise])


def test_a_round_that_failed_on_either_side_makes_an_error_row_naming_the_side() -> None:
    head = {"se|forward|b2c64s28": _rounds([0.1, 0.1])}
    base = {"se|forward|b2c64s28": _rounds([0.1]) + _rounds([0.1], status="timeout")}
    (result,) = ab.judge_ratios(head, base, threshold=0.05)
    assert result.verdict == "error" and result.message.startswith("base: timeout")


def test_judge_instructions_uses_the_threshold_and_keeps_errors() -> None:
    head = {"a|forward|s": {"instructions": 1005.0}, "b|forward|s": {"instructions": 1060.0},
            "c|forward|s": {"instructions": 900.0}}
    base = {case: {"instructions": 1000.0} for case in head}
    head["e|forward|s"] = {"instructions": 10.0}  # counted on one side only
    results = {r.case: r for r in ab.judge_instructions(head, base, {"d|forward|s": "base: error: x"}, 0.01)}
    assert [results[c].verdict for c in ("a|forward|s", "b|forward|s", "c|forward|s", "d|forward|s", "e|forward|s")] == [
        "ok", "regression", "faster", "error", "error"]
    assert results["e|forward|s"].message == "base: Callgrind counted no such case"
    assert results["b|forward|s"].change == pytest.approx(0.06)


def test_resolve_zoo_marks_types_only_one_side_has_and_refuses_a_pattern_neither_has(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sides = Sides(Side("head", tmp_path / "h", "1", "working tree"), Side("base", tmp_path / "b", "2", "HEAD"))
    zoos = {"head": {"se": ["se"], "eca*": ["eca", "eca_new"], "gone": []},
            "base": {"se": ["se"], "eca*": ["eca"], "gone": ["gone"]}}

    def query(side: Side, patterns: str, plugins, repo: Path) -> dict:
        matched = {p: zoos[side.name].get(p, []) for p in patterns.split(",")}
        unloadable = {"new_plugin.py": "ImportError: no such file"} if side.name == "base" else {}
        return {"origins": {"modules": str(side.root / "modules/__init__.py")}, "matched": matched,
                "unloadable": unloadable}

    monkeypatch.setattr(ab, "_query_zoo", query)
    zoo = ab.resolve_zoo(sides, "se,eca*,gone", RegressSettings(), tmp_path)
    assert zoo.names == ["se", "eca"] and zoo.only == {"eca_new": "new", "gone": "removed"}
    assert zoo.unloadable == {"head": {}, "base": {"new_plugin.py": "ImportError: no such file"}}
    rows = ab.only_one_side(zoo.only, RegressSettings(mode=("forward",)))
    assert [(r.case, r.verdict) for r in rows] == [("eca_new|forward|b2c64s28", "new"),
                                                   ("gone|forward|b2c64s28", "removed")]
    with pytest.raises(ValueError, match="'nothing' matches no attention type in either side's zoo"):
        ab.resolve_zoo(sides, "se,nothing", RegressSettings(), tmp_path)
    with pytest.raises(ValueError, match="no pattern given"):
        ab.resolve_zoo(sides, " , ", RegressSettings(), tmp_path)


def test_a_plugin_a_side_cannot_load_is_left_out_of_that_sides_settings(tmp_path: Path) -> None:
    side = Side("base", tmp_path / "base", "1", "HEAD")
    settings = RegressSettings(plugins=("pkg.old", "pkg.new"))
    assert ab.side_settings(settings, side, tmp_path, drop={"pkg.new": "ImportError"}).plugins == ("pkg.old",)


def test_a_sides_processes_import_nothing_from_the_live_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's PYTHONPATH entries inside the repository point at the side's copy; the running
    project is on the path only for a project of plugins."""
    repo_root, elsewhere = tmp_path / "repo", tmp_path / "site"
    (repo_root / "src").mkdir(parents=True)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(repo_root / "src"), str(elsewhere)]))
    side = Side("base", tmp_path / "ab" / "base", "1", "HEAD")
    path = ab._side_env(side, 1, "inherited", repo_root)["PYTHONPATH"].split(os.pathsep)
    assert path == [str(side.root), str(side.root / "src"), str(elsewhere)]
    plugins_side = Side("base", tmp_path / "ab" / "base", "1", "HEAD", harness=False)
    assert ab._side_env(plugins_side, 1, "inherited", repo_root)["PYTHONPATH"].split(os.pathsep)[-1] == str(ab.INSTALLED)


def test_a_side_that_imports_the_zoo_from_elsewhere_is_refused(tmp_path: Path) -> None:
    side = Side("base", tmp_path / "base", "1", "HEAD")
    ab.import_origins(side, {"modules": str(side.root / "modules/__init__.py")})
    with pytest.raises(RevisionError, match="imported suite from outside its tree"):
        ab.import_origins(side, {"suite": str(ROOT / "suite/__init__.py")})


def test_the_table_states_the_rule_and_every_row() -> None:
    rows = [ABCase("se|forward|b2c64s28", 0.06, 0.066, 0.10, 0.04, 0.16, 10, "regression"),
            ABCase("x|forward|b2c64s28", verdict="new", message="only the working tree's zoo has this type")]
    table = ab.format_ab_table(rows, "ratio", 0.05)
    assert "[+4.0%, +16.0%]" in table and "regression" in table and "new: only the working tree" in table
    assert "regression when the interval lies above 0 and the change above +5.0%" in table


# -- the command line --------------------------------------------------------------------------------

def _args(tmp_path: Path, *extra: str) -> cli.GateSettings:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    parsed = parser.parse_args(["--attn", "se", "--mode", "forward", "--out", str(tmp_path / "out"), *extra])
    return cli.GateSettings(**{f.name: getattr(parsed, f.name) for f in dataclasses.fields(cli.GateSettings)})


def test_cli_unknown_revision_is_a_usage_error_and_leaves_the_tree_untouched(
        repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo["root"])
    before = _state(repo["root"])
    with pytest.raises(UsageError, match="'v9.9': not a revision"):
        cli.main(_args(tmp_path, "--against", "v9.9"))
    assert _state(repo["root"]) == before
    assert not (tmp_path / "out" / "verdict.json").exists()


def test_cli_not_a_checkout_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(UsageError, match="is not a git checkout"):
        cli.main(_args(tmp_path, "--against-path", str(plain)))


@pytest.mark.parametrize("extra, message", [
    (("--against", "HEAD", "--against-path", "."), "give one"),
    (("--against", "HEAD", "--baseline", "b.json"), "--baseline applies to a stored baseline"),
    (("--against", "HEAD", "--baseline-name", "a=b"), "--baseline-name applies"),
    (("--update-baseline",), "--update-baseline writes the file named by --baseline FILE"),
    (("--against", "HEAD", "--rounds", "1"), "--rounds must be at least 2 with --against"),
])
def test_cli_refuses_flags_that_contradict_each_other(tmp_path: Path, extra, message) -> None:
    with pytest.raises(UsageError) as refused:
        cli.main(_args(tmp_path, *extra))
    assert message in str(refused.value)


def _other_class_baseline(tmp_path: Path) -> Path:
    baseline = json.loads(cli.DEFAULT_BASELINES["ratio"].read_text())
    baseline["machine_class"] = {**baseline["machine_class"], "cpu": "a CPU no machine has"}
    path = tmp_path / "other_class.json"
    path.write_text(json.dumps(baseline))
    return path


def test_without_a_matching_committed_baseline_the_gate_judges_against_head(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(cli.DEFAULT_BASELINES, "ratio", _other_class_baseline(tmp_path))
    called: list[str | None] = []
    monkeypatch.setattr(cli, "run_ab", lambda args, started: called.append(args.against) or 0)
    assert cli.main(_args(tmp_path)) == 0
    assert called == ["HEAD"]
    out = capsys.readouterr().out
    assert "no committed ratio baseline for this machine class" in out and "--against HEAD" in out


def test_an_explicit_baseline_of_another_class_exits_3_and_names_against(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _other_class_baseline(tmp_path)
    assert cli.main(_args(tmp_path, "--baseline", str(path))) == cli.EXIT_MISMATCH
    out = capsys.readouterr().out
    assert "--against HEAD" in out and "--update-baseline --baseline my_baseline.json" in out


def _fake_rounds(slow: float) -> dict:
    head = {"se|forward|b2c64s28": [], "ca|forward|b2c64s28": []}
    base = {case: [] for case in head}
    for i in range(4):
        for case in head:
            facts = {"status": "ok", "case": case, "attn": case.split("|")[0], "mode": "forward",
                     "shape": [2, 64, 28, 28], "module_ms": 0.05, "reference_ms": 0.8, "ratio": 0.0625 * (1 + 0.01 * i)}
            base[case].append(facts)
            wobble = 1 + 0.005 * (-1) ** i  # rounds never agree exactly; without spread there is no interval
            factor = slow if case.startswith("se") else 1.0
            head[case].append({**facts, "ratio": facts["ratio"] * wobble * factor, "module_ms": 0.05 * factor})
    return {"head": head, "base": base}


@pytest.mark.parametrize("slow, code", [(1.0, 0), (1.2, 1)])
def test_cli_ab_run_with_fake_measurements_writes_the_verdict_and_both_sides(
        repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow: float, code: int) -> None:
    monkeypatch.chdir(repo["root"])
    monkeypatch.setattr(ab, "resolve_zoo", lambda sides, patterns, settings, root: ab.Zoo(
        ["se", "ca"], {"gone": "removed"}, {"head": {}, "base": {}}))
    monkeypatch.setattr(ab, "measure_ratio_sides", lambda sides, settings, **kw: _fake_rounds(slow))
    assert cli.main(_args(tmp_path, "--against", "HEAD", "--attn", "se,ca,gone")) == code
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert verdict["mode"] == "ab" and verdict["base"]["revision"] == repo["new"]
    assert verdict["head"]["revision"] == f"{repo['new']}-dirty" and verdict["base"]["named"] == "HEAD"
    verdicts = {r["case"]: r["verdict"] for r in verdict["results"]}
    assert verdicts == {"se|forward|b2c64s28": "regression" if slow > 1 else "ok",
                        "ca|forward|b2c64s28": "ok", "gone|forward|b2c64s28": "removed"}
    for side in ("head", "base"):
        data = json.loads((tmp_path / "out" / f"benchmark-{side}.json").read_text())
        assert data["commit_info"]["id"] == verdict[side]["revision"]
        assert {b["param"] for b in data["benchmarks"]} == {"se|forward|b2c64s28", "ca|forward|b2c64s28"}


def test_cli_instruction_ab_with_a_relative_out_counts_in_absolute_folders(
        repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The valgrind processes start in their sides' folders: the work folders handed to them
    must not be relative to the user's folder."""
    from suite.regress import callgrind

    monkeypatch.chdir(repo["root"])
    monkeypatch.setattr(ab, "resolve_zoo", lambda sides, patterns, settings, root: ab.Zoo(
        ["se"], {}, {"head": {}, "base": {}}))
    monkeypatch.setattr(callgrind, "find_valgrind", lambda: "/usr/bin/valgrind")
    seen: list[Path] = []

    def collect(settings, work_dir: Path, *, rotate: int, root: Path, label: str, env: dict) -> callgrind.Counts:
        seen.append(work_dir)
        assert work_dir.is_absolute() and env["PYTHONPATH"].split(os.pathsep)[0] == str(root)
        return callgrind.Counts(cases={"se|forward|b2c64s28": {"instructions": 1000.0}}, valgrind="3.19")

    monkeypatch.setattr(callgrind, "collect", collect)
    args = _args(tmp_path, "--against", "HEAD", "--counter", "instructions")
    args.out = Path("relative-out")
    assert cli.main(args) == 0
    assert sorted(p.name for p in seen) == ["callgrind-base", "callgrind-head"]
    assert (repo["root"] / "relative-out" / "verdict.json").is_file()


def test_pytest_benchmark_compare_reads_both_sides_files(tmp_path: Path) -> None:
    """The real ``pytest-benchmark compare`` on the two files an A/B run writes."""
    pytest.importorskip("pytest_benchmark")
    rounds = _fake_rounds(1.2)
    for side in ("head", "base"):
        measured = {case: ab.side_benchmark_facts(fields) for case, fields in rounds[side].items()}
        (tmp_path / f"benchmark-{side}.json").write_text(json.dumps(cli.benchmark_json(measured, commit=side)))
    proc = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", "--columns", "min,median,rounds",
                           str(tmp_path / "benchmark-base.json"), str(tmp_path / "benchmark-head.json")],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Failed to load" not in proc.stdout + proc.stderr
    rows = {(case, side): line for line in proc.stdout.splitlines() for case in ("se", "ca")
            for side in ("ba", "he") if f"test_latency[{case}|forward|b2c64s28]" in line and f"benchmark-{side})" in line}
    assert len(rows) == 4, proc.stdout  # both cases of both files
    assert "60.0000 (1.20)" in rows["se", "he"] and "50.0000 (1.0)" in rows["se", "ba"]  # head's SE 20% slower


def test_an_instruction_class_that_differs_only_in_the_cpu_vendor_is_judged_with_a_warning() -> None:
    amd = {"counter": "instructions", "torch": "2.14.1", "python": "3.11", "arch": "x86_64", "aten_isa": "AVX2",
           "onednn_isa": "AVX2", "blas": "mkl", "cpu_vendor": "AuthenticAMD", "threads": 1, "device": "cpu"}
    intel = {**amd, "cpu_vendor": "GenuineIntel"}
    assert machine_mismatch(amd, intel, soft=SOFT_KEYS["instructions"]) == []
    assert machine_warnings(amd, intel, SOFT_KEYS["instructions"]) == [
        "cpu_vendor: baseline 'AuthenticAMD', this run 'GenuineIntel'"]
    assert machine_mismatch(amd, {**intel, "aten_isa": "AVX512"}, soft=SOFT_KEYS["instructions"])


def test_sides_that_time_their_ratios_differently_are_not_judged() -> None:
    """A base from before the gate's timer changed records no timer: its ratios are not compared."""
    new = [{"status": "ok", "ratio": 1.0, "timer": GATE_TIMER}] * 3
    old = [{"status": "ok", "ratio": 1.0}] * 3
    (case,) = ab.judge_ratios({"c": new}, {"c": old}, 0.05)
    assert case.verdict == "incomparable" and EARLIER_TIMER in case.message and GATE_TIMER in case.message
    (same,) = ab.judge_ratios({"c": new}, {"c": new}, 0.05)
    assert same.verdict == "ok"
    assert cli._verdict([case], [], "regress: ") == cli.EXIT_MISMATCH


# -- one real A/B run ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_real_ab_run_catches_a_slowdown_planted_in_the_working_tree(tmp_path: Path) -> None:
    """A clone of this project whose working tree makes SE do its work three times: the A/B gate
    against the clone's HEAD measures each side from its own tree, so only the head is slow."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    for name in ("modules", "suite"):  # this checkout's code, committed in the clone
        shutil.rmtree(clone / name)
        shutil.copytree(ROOT / name, clone / name, ignore=shutil.ignore_patterns("__pycache__"))
    for key, value in (("user.name", "t"), ("user.email", "t@example.com")):
        _git(clone, "config", key, value)
    _git(clone, "add", "-A")
    _git(clone, "commit", "-q", "--allow-empty", "-m", "this checkout's code")
    se = clone / "modules" / "squeeze_excite.py"
    se.write_text(se.read_text() + "\n\n_forward = SqueezeExcite.forward\n"
                  "SqueezeExcite.forward = lambda self, x: (_forward(self, x), _forward(self, x), _forward(self, x))[-1]\n"
                  "register_attention('se_new', SqueezeExcite, family='test', paper='only in the working tree', "
                  "arxiv=None, kind='gate')\n")
    assert "register_attention" in se.read_text().split("_forward = ")[0]  # imported by the module
    before = _git(clone, "status", "--porcelain")
    proc = subprocess.run([sys.executable, "-m", "suite", "regress", "--against", "HEAD", "--attn", "se,eca,se_new",
                           "--mode", "forward", "--rounds", "3", "--out", str(tmp_path / "out")],
                          cwd=clone, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(clone)})
    assert proc.returncode == cli.EXIT_REGRESSION, proc.stdout + proc.stderr
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    results = {r["case"]: r for r in verdict["results"]}
    assert results["se|forward|b2c64s28"]["verdict"] == "regression"
    assert results["se|forward|b2c64s28"]["change"] > 0.5
    assert results["eca|forward|b2c64s28"]["change"] < 0.5  # eca unchanged: no threefold work
    assert results["se_new|forward|b2c64s28"]["verdict"] == "new"  # the base's zoo lacks it
    assert _git(clone, "status", "--porcelain") == before
