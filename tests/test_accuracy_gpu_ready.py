"""The accuracy stage's CUDA and torchrun paths, checked on a CPU machine with fakes: the gpu
preset refuses a machine without usable CUDA before it reads data, the decode pool does not fork
after CUDA or a process group is initialised, the job's collectives wait long enough for the
first rank to decode, a failure on one rank ends the job with its message, and the process count
is part of a run's identity."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

import suite.accuracy.data as data_mod
import suite.accuracy.sweep as sweep_mod
import suite.accuracy.train as train_mod
from suite.__main__ import main as suite_main
from suite.accuracy.cli import DIST_TIMEOUT_MIN, AccuracySettings
from suite.accuracy.cli import main as accuracy_main
from suite.accuracy.data import SplitData, load_split
from suite.accuracy.identity import run_identity, same_comparison
from suite.accuracy.recipe import PROFILES
from suite.accuracy.train import DistInfo
from suite.env import PROJECT_ROOT
from suite.errors import UsageError
from suite.records import RecordStore


def _image_folder(root: Path, classes: int = 2, per_class: int = 3, side: int = 12) -> Path:
    """A small decodable ImageFolder: ``classes`` classes of random PNGs in train/ and val/."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


class _DecodingStarted(Exception):
    """Raised by the fakes below when the sweep gets as far as decoding or training."""


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose CUDA is not usable; decoding or training raise :class:`_DecodingStarted`."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def started(*args: object, **kwargs: object) -> None:
        raise _DecodingStarted

    monkeypatch.setattr(sweep_mod, "load_split", started)
    monkeypatch.setattr(sweep_mod, "train_run", started)


# 1. the gpu preset on a machine without usable CUDA

@pytest.mark.parametrize("device", [None, "cuda"])
def test_gpu_preset_without_cuda_is_refused_before_any_data_is_read(no_cuda, device, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ATTNBENCH_CACHE", str(cache))
    data = _image_folder(tmp_path / "data")
    settings = AccuracySettings(preset="gpu", attn="se", device=device, data=str(data), out=tmp_path / "out",
                                no_progress=True)
    with pytest.raises(UsageError) as refused:
        accuracy_main(settings)
    message = str(refused.value)
    assert "CUDA" in message and "--device cpu" in message and "--preset cpu" in message
    assert not cache.exists() or not any(cache.rglob("*"))
    assert not (tmp_path / "out").exists()


def test_gpu_preset_without_cuda_exits_2_naming_cuda(no_cuda, tmp_path, capsys):
    data = _image_folder(tmp_path / "data")
    code = suite_main(["accuracy", "--preset", "gpu", "--attn", "se", "--data", str(data),
                       "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 2
    assert "CUDA" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_device_cuda_without_cuda_is_refused_for_any_preset(no_cuda, tmp_path):
    with pytest.raises(UsageError, match="--device cuda needs CUDA"):
        sweep_mod.training_device(AccuracySettings(preset="smoke", device="cuda"))


def test_the_gpu_preset_trains_where_it_is_told_without_cuda(no_cuda):
    assert sweep_mod.training_device(AccuracySettings(preset="gpu", device="cpu")) == "cpu"
    assert sweep_mod.training_device(AccuracySettings(preset="gpu", device="auto")) == "auto"
    assert sweep_mod.training_device(AccuracySettings(preset="cpu")) == "cpu"


def test_more_processes_than_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(UsageError, match="LOCAL_RANK 1 but CUDA sees 1 GPU"):
        sweep_mod.training_device(AccuracySettings(preset="gpu"))
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert sweep_mod.training_device(AccuracySettings(preset="gpu")) == "cuda"


# 2. the decode pool after CUDA or a process group

class _FakePool:
    """A ProcessPoolExecutor stand-in that records the multiprocessing context it was given and
    runs the jobs in this process."""

    contexts: list = []

    def __init__(self, workers: int, mp_context=None) -> None:
        _FakePool.contexts.append(mp_context)

    def __enter__(self) -> _FakePool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, jobs, chunksize: int = 1):
        return map(fn, jobs)


def _start_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The start method of the decode pool that :func:`load_split` opens for 65 images."""
    root = _image_folder(tmp_path / "data", classes=1, per_class=65, side=8)
    _FakePool.contexts = []
    monkeypatch.setattr(data_mod.concurrent.futures, "ProcessPoolExecutor", _FakePool)
    data = load_split(root, "train", ["class0"], 8, cache_dir=tmp_path / "cache", workers=2)
    assert len(data) == 65 and len(_FakePool.contexts) == 1
    return _FakePool.contexts[0].get_start_method()


@pytest.mark.skipif(os.name != "posix", reason="fork exists on POSIX only")
def test_decode_pool_does_not_fork_after_cuda_is_initialised(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert _start_method(tmp_path, monkeypatch) != "fork"


@pytest.mark.skipif(os.name != "posix", reason="fork exists on POSIX only")
def test_decode_pool_does_not_fork_after_a_process_group_is_joined(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    assert _start_method(tmp_path, monkeypatch) != "fork"


@pytest.mark.skipif(os.name != "posix", reason="fork exists on POSIX only")
def test_decode_pool_forks_in_a_fresh_process(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert _start_method(tmp_path, monkeypatch) == "fork"


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="forkserver exists on POSIX only")
def test_a_forkserver_pool_decodes_the_same_images(tmp_path, monkeypatch):
    root = _image_folder(tmp_path / "data", classes=1, per_class=65, side=8)
    serial = load_split(root, "train", ["class0"], 8, cache_dir=tmp_path / "serial", workers=1)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert data_mod.decode_pool_context().get_start_method() == "forkserver"
    pooled = load_split(root, "train", ["class0"], 8, cache_dir=tmp_path / "pooled", workers=2)
    assert torch.equal(serial.images, pooled.images) and pooled.files == serial.files


# 3. the job's timeout covers the first rank decoding

class _Joined(Exception):
    """Raised in place of the sweep once the job is joined."""


def _join(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: AccuracySettings) -> list[dict]:
    """The keyword arguments of every ``init_process_group`` call :func:`run_sweep` makes as
    rank 0 of 2 (the process group and the sweep faked)."""
    calls: list[dict] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(train_mod.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(train_mod.dist, "init_process_group", lambda **kwargs: calls.append(kwargs))

    def joined(*args: object) -> None:
        raise _Joined

    monkeypatch.setattr(sweep_mod, "_sweep", joined)
    monkeypatch.setattr(torch, "set_flush_denormal", lambda on: True)
    with pytest.raises(_Joined):
        sweep_mod.run_sweep(settings, PROFILES["smoke"], [], tmp_path, tmp_path / "out")
    return calls


def test_the_process_group_waits_long_enough_for_decoding(tmp_path, monkeypatch):
    calls = _join(monkeypatch, tmp_path, AccuracySettings(preset="smoke", device="cpu"))
    assert calls == [{"backend": "gloo", "timeout": timedelta(minutes=DIST_TIMEOUT_MIN)}]
    assert timedelta(minutes=DIST_TIMEOUT_MIN) >= timedelta(hours=2)


def test_dist_timeout_sets_the_process_group_timeout(tmp_path, monkeypatch):
    from suite.__main__ import build_parser, settings_from

    args = build_parser("accuracy").parse_args(["accuracy", "--preset", "smoke", "--device", "cpu",
                                                "--dist-timeout", "30"])
    settings = settings_from(args, AccuracySettings)
    assert _join(monkeypatch, tmp_path, settings)[0]["timeout"] == timedelta(minutes=30)
    with pytest.raises(SystemExit) as refused:
        suite_main(["accuracy", "--dist-timeout", "0"])
    assert refused.value.code == 2


# 4. one rank's failure ends the job

def _sweep(tmp_path: Path, info: DistInfo) -> sweep_mod.Sweep:
    """A sweep of the smoke recipe over 4 random 32 px images, as this rank of ``info``."""
    images = torch.zeros(4, 32, 32, 3, dtype=torch.uint8)
    split = SplitData(images, torch.tensor([0, 1, 0, 1]), ["a", "b"], files=["f0", "f1", "f2", "f3"], identity="x")
    identity = run_identity("r", "x", "x", False, 1, info.world_size)
    return sweep_mod.Sweep(AccuracySettings(preset="smoke", no_progress=True), PROFILES["smoke"], info,
                           tmp_path / "out", tmp_path, split, split, identity, {},
                           RecordStore(tmp_path / "out" / "runs.jsonl"), RecordStore(tmp_path / "out" / "per_image.jsonl"))


PLAN = [sweep_mod.TrainingRun(attn, 0, "ctx") for attn in ("none", "se")]
"""Two runs, each to be trained (the first rank's records hold neither)."""


def _failing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``train_run`` raising for every run, and :data:`PLAN` what every rank is told to train;
    returns the designs ``train_run`` was called for."""
    called: list[str] = []

    def broken(arch: str, attn: str, *args: object, **kwargs: object) -> None:
        called.append(attn)
        raise RuntimeError("no memory for the gate")

    monkeypatch.setattr(sweep_mod, "train_run", broken)
    monkeypatch.setattr(sweep_mod, "broadcast_object", lambda obj, info: PLAN)
    return called


@pytest.mark.parametrize("rank", [0, 1])
def test_a_failed_run_ends_its_rank_with_its_message_under_ddp(tmp_path, monkeypatch, capsys, rank):
    called = _failing(monkeypatch)
    sweep = _sweep(tmp_path, DistInfo(rank=rank, world_size=2))
    with pytest.raises(SystemExit) as ended:
        sweep_mod._train_pending(sweep, PLAN)
    assert isinstance(ended.value, sweep_mod.RankFailed)
    assert ended.value.code not in (0, None)  # a message: Python prints it and exits 1
    assert str(ended.value) == f"rank {rank}: none seed 0: RuntimeError: no memory for the gate"
    assert called == ["none"]  # the next run is not started
    assert f"rank {rank}: none seed 0 failed" in capsys.readouterr().err
    records = sweep.runs.read() if sweep.runs.path.exists() else []
    assert [(r["attn"], r["status"]) for r in records] == ([("none", "error")] if rank == 0 else [])


def test_a_failed_run_in_one_process_is_a_record_and_the_sweep_goes_on(tmp_path, monkeypatch):
    called = _failing(monkeypatch)
    sweep_mod._train_pending(_sweep(tmp_path, DistInfo()), PLAN)
    assert called == ["none", "se"]
    records = RecordStore(tmp_path / "out" / "runs.jsonl").read()
    assert [(r["attn"], r["status"], r["message"]) for r in records] == [
        ("none", "error", "RuntimeError: no memory for the gate"), ("se", "error", "RuntimeError: no memory for the gate")]


_RANK_ONE_FAILS = '''
import os

import torch
from torch import nn


class RankOneFails(nn.Module):
    """Raises in training on torchrun's rank 1 only."""

    def __init__(self, channels, **kwargs):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        if self.training and os.environ.get("RANK") == "1":
            raise RuntimeError("rank one refuses")
        return x * self.w
'''


@pytest.mark.slow
def test_under_torchrun_a_failure_on_one_rank_ends_the_job_with_its_message(tmp_path):
    plugin = tmp_path / "rank_one_fails.py"
    plugin.write_text(_RANK_ONE_FAILS)
    data = _image_folder(tmp_path / "data", classes=2, per_class=12, side=24)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "suite", "accuracy", "--preset", "smoke", "--attn", "rankfail", "--seeds", "1",
               "--plugin", f"rankfail={plugin}:RankOneFails", "--data", str(data), "--out", str(tmp_path / "out"),
               "--cache-dir", str(tmp_path / "cache"), "--threads", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    log = tmp_path / "torchrun.log"
    with log.open("w") as out:
        job = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
        try:
            job.wait(timeout=180)
        except subprocess.TimeoutExpired:  # a rank waits in a collective: torchrun stops its ranks on SIGTERM
            job.terminate()
            job.wait(timeout=60)
            pytest.fail("the job did not end within 180 s of a run failing on rank 1")
    text = log.read_text()
    assert job.returncode != 0
    assert "rank 1: rankfail seed 0: RuntimeError: rank one refuses" in text, text[-3000:]


# 5. the process count in the run's identity

def _keys(tmp_path: Path, world_size: int) -> list[str]:
    return [run.key() for run in sweep_mod._plan(_sweep(tmp_path, DistInfo(world_size=world_size)), ["se"], [0])]


def test_the_process_count_is_part_of_the_run_key(tmp_path):
    assert set(_keys(tmp_path, 1)).isdisjoint(_keys(tmp_path, 2))


def test_a_single_process_run_keeps_its_key(tmp_path):
    identity = run_identity("r", "x", "x", False, 1, 1)
    before = (f"{PROFILES['smoke'].arch}|{tmp_path.name}|r|data={identity['data_id']}|fp32|threads=1|"
              f"code={identity['code_version']}")
    assert [key.rsplit("|design=", 1)[0] for key in _keys(tmp_path, 1)] == [f"none|seed=0|{before}",
                                                                             f"se|seed=0|{before}"]


def test_runs_of_other_process_counts_are_not_paired():
    one, two = run_identity("r", "x", "x", False, 1, 1), run_identity("r", "x", "x", False, 1, 2)
    records = [{**one, "attn": "none"}, {**two, "attn": "se"}, {**{k: v for k, v in one.items() if k != "world_size"},
                                                               "attn": "eca"}]
    assert [r["attn"] for r in same_comparison(records, one)] == ["none", "eca"]
    assert [r["attn"] for r in same_comparison(records, two)] == ["se"]


def test_the_record_holds_the_process_count_and_the_batch_per_process(tmp_path):
    sweep = _sweep(tmp_path, DistInfo(world_size=2))
    run = sweep_mod.TrainingRun("none", 0, "ctx")
    record = sweep_mod._record(sweep, run, {"status": "ok"}, 0.0)
    assert record["world_size"] == 2 and record["per_rank_batch"] == PROFILES["smoke"].batch_size // 2


# 6. missing data

def test_missing_data_names_the_path_and_the_layout_before_any_work(no_cuda, tmp_path, capsys):
    missing = tmp_path / "nope"
    code = suite_main(["accuracy", "--preset", "smoke", "--attn", "se", "--data", str(missing),
                       "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "train/<class>" in err and "val/<class>" in err


def test_data_without_val_names_the_layout(no_cuda, tmp_path, capsys):
    data = _image_folder(tmp_path / "data")
    import shutil

    shutil.rmtree(data / "val")
    assert suite_main(["accuracy", "--preset", "smoke", "--attn", "se", "--data", str(data),
                       "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "missing val/" in err and "train/<class>" in err
