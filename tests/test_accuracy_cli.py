"""``python -m suite accuracy`` end to end on real Imagenette images (smoke profile)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from accuracy_fixtures import image_folder

from suite.__main__ import main as suite_main
from suite.accuracy.cli import SOURCE_DESIGNS
from suite.env import PROJECT_ROOT
from suite.records import RecordStore

pytest_plugins = ["accuracy_fixtures"]  # imagenette_root, cache_dir


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    yield "1"
    torch.set_num_threads(threads)


def _records(out: Path) -> list[dict]:
    return RecordStore(out / "runs.jsonl").read()


@pytest.mark.slow
def test_smoke_profile_end_to_end_and_rerun_skips(imagenette_root, cache_dir, tmp_path, one_thread, capsys):
    out = tmp_path / "out"
    argv = ["accuracy", "--preset", "smoke", "--attn", "se", "--seeds", "2", "--out", str(out),
            "--cache-dir", str(cache_dir), "--threads", one_thread, "--no-progress"]
    started = time.perf_counter()
    assert suite_main(argv) == 0
    assert time.perf_counter() - started < 120
    records = _records(out)
    assert [(r["attn"], r["seed"], r["status"]) for r in records] == [
        ("none", 0, "ok"), ("se", 0, "ok"), ("none", 1, "ok"), ("se", 1, "ok")]
    for r in records:
        assert 0.0 <= r["top1"] <= r["top5"] <= 1.0
        assert r["epochs"] == 2 and r["wall_s"] > 0 and r["val_loss"] > 0
        assert r["env_commit"] and r["env_torch_version"] and r["threads"] >= 1 and r["recipe_config"]["image_size"] == 32
    assert not list((out / "checkpoints").glob("*.pt"))  # removed once the row is written
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["attn"]) == ["none", "none", "se", "se"]
    deltas = pd.read_csv(out / "deltas.csv").set_index("attn")
    se = {s: r["top1"] for s, r in ((r["seed"], r) for r in records if r["attn"] == "se")}
    base = {s: r["top1"] for s, r in ((r["seed"], r) for r in records if r["attn"] == "none")}
    assert deltas.loc["se", "top1_delta"] == pytest.approx(sum(se[s] - base[s] for s in (0, 1)) / 2)
    assert deltas.loc["se", "top1_pairs"] == 2
    summary = (out / "summary.md").read_text()
    assert "| se | 2 |" in summary and "95% CI" in summary
    capsys.readouterr()
    # a second invocation finds every run done and trains nothing
    assert suite_main(argv) == 0
    assert "4 already done, 0 to do" in capsys.readouterr().out
    assert len(_records(out)) == 4


def test_missing_data_is_an_error_naming_the_path(tmp_path, capsys):
    code = suite_main(["accuracy", "--preset", "smoke", "--attn", "se", "--data", str(tmp_path / "nope"),
                       "--out", str(tmp_path)])
    assert code == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err


def test_unknown_attention_is_an_error_with_close_matches(capsys):
    assert suite_main(["accuracy", "--attn", "sse"]) == 2
    err = capsys.readouterr().err
    assert "unknown attention type 'sse'" in err and "se" in err
    assert suite_main(["accuracy", "--attn", "zz*"]) == 2
    assert "matches no registered" in capsys.readouterr().err


def test_every_flag_is_documented(capsys):
    with pytest.raises(SystemExit):
        suite_main(["accuracy", "--help"])
    text = capsys.readouterr().out
    for flag in ("--preset", "--attn", "--seeds", "--first-seed", "--data", "--out", "--cache-dir", "--workers",
                 "--device", "--threads", "--no-progress", "--arch", "--epochs", "--batch", "--lr",
                 "--weight-decay", "--warmup-epochs", "--label-smoothing", "--size", "--cache-size",
                 "--augment", "--num-classes", "--classes", "--train-per-class", "--val-per-class", "--amp"):
        assert flag in text, flag
    assert ",".join(SOURCE_DESIGNS) in text.replace("\n", "").replace(" ", "")


def _cli(out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "suite", "accuracy", "--preset", "smoke", "--attn", "none", "--epochs", "3",
            "--out", str(out), "--cache-dir", str(cache), "--threads", "1", "--no-progress"]


@pytest.mark.slow
def test_killed_mid_epoch_resumes_to_the_same_result(imagenette_root, cache_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    reference = tmp_path / "reference"
    subprocess.run(_cli(reference, cache_dir), check=True, env=env, capture_output=True, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(killed, cache_dir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list((killed / "checkpoints").glob("*.pt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # the first epoch's checkpoint just appeared: we are in epoch 2
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _records(killed) == []
    subprocess.run(_cli(killed, cache_dir), check=True, env=env, capture_output=True, timeout=300)
    [resumed] = _records(killed)
    [uninterrupted] = _records(reference)
    assert resumed["resumed_from"] >= 1 and uninterrupted["resumed_from"] == 0
    for field in ("status", "epochs", "top1", "top5"):
        assert resumed[field] == uninterrupted[field], field
    for field in ("val_loss", "train_loss"):
        assert resumed[field] == pytest.approx(uninterrupted[field], rel=1e-6), field


def test_entries_without_a_place_are_skipped_by_pattern_and_refused_by_name(imagenette_root, cache_dir, tmp_path,
                                                                            one_thread, capsys):
    common = ["--preset", "smoke", "--out", str(tmp_path), "--cache-dir", str(cache_dir), "--threads", one_thread,
              "--no-progress", "--epochs", "1", "--train-per-class", "2"]
    assert suite_main(["accuracy", "--attn", "ccp_max", *common]) == 2
    assert "cannot build resnet_small with ccp_max" in capsys.readouterr().err
    assert suite_main(["accuracy", "--attn", "ccp_*", *common]) == 0
    text = capsys.readouterr().out
    assert "skipping ccp_max" in text and "skipping ccp_mean" in text
    assert [r["attn"] for r in _records(tmp_path)] == ["none"]


@pytest.mark.slow
def test_the_cli_runs_unchanged_under_torchrun(imagenette_root, cache_dir, tmp_path):
    # the promise of the gpu profile on many GPUs, exercised on the CPU: torchrun starts two
    # gloo ranks of the same command, rank 0 writes the rows, and both ranks leave cleanly
    out = tmp_path / "torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "suite", "accuracy", "--preset", "smoke", "--attn", "se", "--seeds", "1",
               "--data", str(imagenette_root), "--out", str(out), "--cache-dir", str(cache_dir), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    records = _records(out)
    assert sorted(r["attn"] for r in records) == ["none", "se"]
    assert all(r["status"] == "ok" and r["world_size"] == 2 for r in records)
    assert len(pd.read_csv(out / "runs.csv")) == 2  # written once, by rank 0


def _smoke(data: Path, out: Path, cache: Path, *extra: str) -> int:
    return suite_main(["accuracy", "--preset", "smoke", "--attn", "se", "--seeds", "1", "--data", str(data),
                       "--out", str(out), "--cache-dir", str(cache), "--threads", "1", "--no-progress", *extra])


def test_a_dataset_changed_under_the_same_name_is_never_paired_with_old_records(tmp_path, one_thread):
    """The bug first: the old run key named the data by its folder name only, so a 3-class
    dataset in the place of a 2-class one of the same name resumed (and was paired with) the old
    runs. Now the key and the records carry the data's identity, and deltas pair within it."""
    data, out, cache = tmp_path / "mini", tmp_path / "out", tmp_path / "cache"
    image_folder(data, classes=2)
    assert _smoke(data, out, cache) == 0
    first = _records(out)
    legacy = {f"{r['attn']}|seed={r['seed']}|{r['arch']}|{data.name}|{r['recipe']}" for r in first}
    shutil.rmtree(data)
    image_folder(data, classes=3)
    assert _smoke(data, out, cache) == 0
    second = _records(out)[len(first):]
    # what the old key did: the new runs' keys would have been the old ones, so nothing was trained
    assert {f"{r['attn']}|seed={r['seed']}|{r['arch']}|{data.name}|{r['recipe']}" for r in second} == legacy
    assert [(r["attn"], r["status"], r["num_classes"]) for r in second] == [("none", "ok", 3), ("se", "ok", 3)]
    assert {r["data_id"] for r in first}.isdisjoint({r["data_id"] for r in second})
    assert {r["key"] for r in first}.isdisjoint({r["key"] for r in second})
    deltas = pd.read_csv(out / "deltas.csv").set_index("attn")
    by_attn = {r["attn"]: r for r in second}
    assert deltas.loc["se", "top1_delta"] == pytest.approx(by_attn["se"]["top1"] - by_attn["none"]["top1"])
    assert deltas.loc["none", "runs"] == 1  # the 2-class runs are not in this comparison


def test_every_run_keeps_its_per_image_results(tmp_path, one_thread):
    data, out, cache = tmp_path / "mini", tmp_path / "out", tmp_path / "cache"
    image_folder(data, classes=2)
    assert _smoke(data, out, cache) == 0
    runs = {r["key"]: r for r in _records(out)}
    lines = RecordStore(out / "per_image.jsonl").read()
    assert {line["key"] for line in lines} == set(runs)
    (manifest,) = out.glob("val_images-*.json")
    listed = json.loads(manifest.read_text())
    assert listed["files"] == sorted(listed["files"]) and len(listed["files"]) == 8
    for line in lines:
        run = runs[line["key"]]
        assert len(line["correct"]) == len(line["loss"]) == len(listed["files"])
        assert line["correct"].count("1") / len(line["correct"]) == pytest.approx(run["top1"])
        assert sum(line["loss"]) / len(line["loss"]) == pytest.approx(run["val_loss"], abs=1e-4)
    per_class = pd.read_csv(out / "per_class.csv")
    assert set(per_class["class"]) == {"class0", "class1"} and set(per_class["attn"]) == {"se"}
    assert "top1_se_images" in pd.read_csv(out / "deltas.csv")


def test_no_finished_run_is_a_nonzero_exit(tmp_path, one_thread, capsys):
    data = image_folder(tmp_path / "mini", classes=2)
    code = _smoke(data, tmp_path / "out", tmp_path / "cache", "--batch", "64")  # larger than 24 images
    assert code == 1
    assert "none of the 2 runs finished" in capsys.readouterr().err


def test_tables_only_rewrites_the_tables_from_the_records(tmp_path, one_thread, capsys):
    data, out, cache = tmp_path / "mini", tmp_path / "out", tmp_path / "cache"
    image_folder(data, classes=2)
    assert _smoke(data, out, cache) == 0
    written = {name: (out / name).read_text() for name in ("runs.csv", "deltas.csv", "per_class.csv", "summary.md")}
    for name in written:
        (out / name).unlink()
    assert suite_main(["accuracy", "--out", str(out), "--tables-only"]) == 0
    assert {name: (out / name).read_text() for name in written} == written
    assert "message" in pd.read_csv(out / "runs.csv").columns
    assert suite_main(["accuracy", "--out", str(tmp_path / "empty"), "--tables-only"]) == 2
    assert "no records in" in capsys.readouterr().err


def test_a_run_that_raises_is_a_record_with_its_message_and_traceback(tmp_path, one_thread, monkeypatch):
    import suite.accuracy.sweep as accuracy_sweep

    def broken(*args, **kwargs):
        raise RuntimeError("no memory for the gate")

    monkeypatch.setattr(accuracy_sweep, "train_run", broken)
    data = image_folder(tmp_path / "mini", classes=2)
    assert _smoke(data, tmp_path / "out", tmp_path / "cache") == 1
    records = _records(tmp_path / "out")
    assert {r["status"] for r in records} == {"error"}
    assert all(r["message"] == "RuntimeError: no memory for the gate" and "broken" in r["traceback"] for r in records)
