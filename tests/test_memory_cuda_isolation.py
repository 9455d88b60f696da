"""CUDA memory is measured in a new interpreter per configuration with a timeout, and a failure
costs its configuration alone; nothing forks this process. Tested on the CPU: a fake
``torch.cuda`` in the parent, and fake workers (a script in place of ``python -m
suite.timing.memory``) that hang, crash, run out of memory or answer."""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from suite import env
from suite.records import RecordStore
from suite.timing import cli_memory, memory
from suite.timing.grid import Config
from suite.timing.timer import TF32_MODES, cuda_settings
from suite.timing.workloads import StageError

FAKE_WORKER = r"""
import json, os, subprocess, sys, time
config, flags = json.loads(sys.argv[1]), json.loads(sys.argv[2])
pids = os.environ["FAKE_WORKER_PIDS"]
name = config["name"]
if name == "se":  # hangs, with a process of its own that hangs too
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(pids, "a") as handle:
        handle.write(f"{os.getpid()} {helper.pid}\n")
    time.sleep(60)
if name == "cbam":  # dies without a result (a crash, a sticky CUDA error)
    sys.stderr.write("CUDA error: an illegal memory access was encountered\n")
    os._exit(3)
if name == "gct":  # reports the step's CUDA out-of-memory error
    print(MARKER + json.dumps({"status": "oom", "message": "OutOfMemoryError: CUDA out of memory"}), flush=True)
    sys.exit(0)
print(MARKER + json.dumps({"cuda_step_peak_bytes": 4096, "cuda_peak_bytes": 8192, "seen_flags": flags,
                           "seen_device": config["device"]}), flush=True)
""".replace("MARKER + ", f"{memory.MARKER!r} + ")


@pytest.fixture()
def fake_workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Spawned memory workers run :data:`FAKE_WORKER`; the parent's in-process CUDA function fails
    the test if it is called. Returns the file where a hanging worker writes its process ids."""
    pids = tmp_path / "pids.txt"
    monkeypatch.setenv("FAKE_WORKER_PIDS", str(pids))
    monkeypatch.setattr(memory, "_worker_command", lambda python, arguments: [python, "-c", FAKE_WORKER, *arguments],
                        raising=False)

    def in_parent(config: Config) -> dict[str, Any]:
        raise AssertionError("measure_memory_cuda ran in the bench process")

    monkeypatch.setattr(memory, "measure_memory_cuda", in_parent)
    monkeypatch.setattr(cli_memory, "measure_memory_cuda", in_parent, raising=False)  # were it imported there
    return pids


@pytest.fixture()
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch in this process sees one CUDA device; no nvidia-smi and no pynvml answer."""
    props = SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, multi_processor_count=132,
                            total_memory=80 * 2**30, L2_cache_size=50 * 2**20, uuid=None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)

    def no_smi(argv: Any) -> str:
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(env, "_run", no_smi, raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", None)


def _gone(pid: int, wait_s: float = 5.0) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie waiting for its parent) within ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli_memory.add_arguments(parser)
    parsed = parser.parse_args(argv)
    fields = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(cli_memory.SETTINGS)}
    return cli_memory.main(cli_memory.SETTINGS(**fields))


@pytest.mark.slow
def test_a_hanging_cuda_worker_times_out_and_the_sweep_goes_on(tmp_path: Path, fake_workers: Path,
                                                              fake_cuda: None) -> None:
    out = tmp_path / "mem"
    argv = ["--device", "cuda", "--attn", "se,eca,cbam,gct", "--mode", "forward", "--dtype", "fp32",
            "--memory-format", "contiguous", "--compile", "eager", "--batch", "1", "--size", "8",
            "--channels", "8", "--threads", "1", "--timeout-s", "3", "--cudnn-benchmark", "on",
            "--no-progress", "--out", str(out)]
    start = time.monotonic()
    assert _run_cli(argv) == 0
    assert time.monotonic() - start < 20  # the hanging worker cost its timeout, not its 60 s
    rows = {r["attn"]: r for r in RecordStore(out / "records.jsonl").read() if r.get("record", "memory") == "memory"}
    assert not any("ran in the bench process" in r["message"] for r in rows.values())
    assert rows["se"]["status"] == "timeout" and "more than 3 s" in rows["se"]["message"]
    assert rows["eca"]["status"] == "ok" and rows["eca"]["cuda_step_peak_bytes"] == 4096
    assert rows["eca"]["isolation"] == "spawn"
    assert rows["eca"]["seen_flags"] == {"cudnn_benchmark": True, "tf32": "default"}  # the stage's settings
    assert rows["cbam"]["status"] == "error" and "illegal memory access" in rows["cbam"]["message"]
    assert rows["gct"]["status"] == "oom" and "CUDA out of memory" in rows["gct"]["message"]
    worker, helper = map(int, fake_workers.read_text().split())
    assert _gone(worker) and _gone(helper)  # the hanging worker and what it started were killed


def test_the_cuda_worker_gets_the_device_and_the_parents_backend_flags(fake_workers: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    config = Config(stage="memory", attn="eca", mode="train", device="cuda:1", batch=1, channels=8, size=8)
    fields = memory.measure_memory_cuda_isolated(config, timeout_s=60)
    assert fields["seen_device"] == "cuda:1" and fields["seen_flags"] == memory.backend_flags()
    assert fields["seen_flags"]["cudnn_benchmark"] is True and fields["isolation"] == "spawn"
    with pytest.raises(ValueError, match="'cpu'"):
        memory.measure_memory_cuda_isolated(dataclasses.replace(config, device="cpu"))


@pytest.fixture()
def restored_backends() -> Any:
    """torch's cuDNN and TF32 flags as they were before the test."""
    saved = memory.backend_flags()
    with cuda_settings(cudnn_benchmark=saved["cudnn_benchmark"], tf32=saved["tf32"]):
        yield


def test_the_worker_measures_a_cuda_config_on_its_device_under_the_flags(monkeypatch: pytest.MonkeyPatch,
                                                                         restored_backends: None) -> None:
    devices: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", devices.append)
    monkeypatch.setattr(memory, "measure_memory_cuda",
                        lambda config: {"cuda_peak_bytes": 1, "benchmark": torch.backends.cudnn.benchmark})
    config = Config(stage="memory", attn="se", mode="forward", device="cuda:1", batch=1, channels=8, size=8)
    flags = {**memory.backend_flags(), "cudnn_benchmark": not torch.backends.cudnn.benchmark}
    fields = memory._measure_in_child(json.dumps(config.to_wire()), flags)
    assert fields == {"cuda_peak_bytes": 1, "benchmark": flags["cudnn_benchmark"]}
    assert devices == [torch.device("cuda:1")]


def _tf32_getters() -> dict[str, Any]:
    """What inductor reads of TF32 (the legacy getters), or ``raises`` for a getter that raises."""
    read = {"matmul": lambda: torch.backends.cuda.matmul.allow_tf32, "conv": lambda: torch.backends.cudnn.allow_tf32,
            "precision": torch.get_float32_matmul_precision}
    values: dict[str, Any] = {}
    for name, getter in read.items():
        try:
            values[name] = getter()
        except RuntimeError:
            values[name] = "raises"
    return values


@pytest.mark.parametrize("mode", ["default", "on", "off"])
def test_the_worker_runs_in_the_parents_tf32_mode_with_the_legacy_getters_answering(
        mode: str, monkeypatch: pytest.MonkeyPatch, restored_backends: None) -> None:
    """The parent's ``--tf32`` mode reaches the worker by name and is set there as the latency
    stage sets it (:func:`suite.timing.timer.cuda_settings`): the getters inductor reads answer."""
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(memory, "measure_memory_cuda", lambda config: _tf32_getters())
    with cuda_settings(cudnn_benchmark=True, tf32=mode):
        flags = memory.backend_flags()
    assert flags == {"cudnn_benchmark": True, "tf32": mode}
    config = Config(stage="memory", attn="se", mode="forward", device="cuda:0", batch=1, channels=8, size=8)
    seen = memory._measure_in_child(json.dumps(config.to_wire()), flags)
    matmul, conv = TF32_MODES[mode]
    assert seen == {"matmul": matmul, "conv": conv, "precision": "high" if matmul else "highest"}


class FakeCudaMemory:
    """The ``torch.cuda`` memory statistics :func:`suite.timing.memory.measure_memory_cuda` reads."""

    def __init__(self) -> None:
        self.allocated = 1000

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("synchronize", "empty_cache", "reset_peak_memory_stats"):
            monkeypatch.setattr(torch.cuda, name, lambda *args: None)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: self.allocated)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: self.allocated + 5000)
        monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device: 2**21)


def test_a_cuda_out_of_memory_error_in_the_worker_is_an_oom_row(monkeypatch: pytest.MonkeyPatch,
                                                               restored_backends: None) -> None:
    """The worker's real path, with the module on the CPU and the CUDA statistics faked: the
    second (measured) step raising CUDA's out-of-memory error reports ``oom``."""
    FakeCudaMemory().install(monkeypatch)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    real_build = memory._build
    monkeypatch.setattr(memory, "_build", lambda config: real_build(dataclasses.replace(config, device="cpu")))
    config = Config(stage="memory", attn="se", mode="forward", device="cuda:0", batch=1, channels=8, size=8)
    fields = memory._measure_in_child(json.dumps(config.to_wire()), memory.backend_flags())
    assert fields["cuda_step_peak_bytes"] == 5000 and fields["cuda_peak_bytes"] == 6000
    steps = iter([None])
    real_step = memory._one_step

    def second_step_fails(module: Any, x: Any, cfg: Config) -> Any:
        if next(steps, "measured") == "measured":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(module, x, cfg)

    monkeypatch.setattr(memory, "_one_step", second_step_fails)
    fields = memory._measure_in_child(json.dumps(config.to_wire()), memory.backend_flags())
    assert fields["status"] == "oom" and "CUDA out of memory" in fields["message"]


def test_nothing_forks_this_process_once_cuda_is_initialised(monkeypatch: pytest.MonkeyPatch,
                                                              fake_workers: Path) -> None:
    """With CUDA initialised here, the CPU path asks multiprocessing for a forkserver (a new
    interpreter that forks its own children) and the CUDA path for a new interpreter; neither
    asks for ``fork``, nor calls ``os.fork``."""
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    methods: list[str] = []
    real_context = multiprocessing.get_context

    def recording_context(method: str | None = None) -> Any:
        methods.append(str(method))
        if method == "fork":
            raise AssertionError("a fork context in a process where CUDA is initialised")
        return real_context(method)

    def no_fork() -> int:
        raise AssertionError("os.fork in a process where CUDA is initialised")

    monkeypatch.setattr(multiprocessing, "get_context", recording_context)
    monkeypatch.setattr(os, "fork", no_fork)
    config = Config(stage="memory", attn="eca", mode="forward", device="cuda:0", batch=1, channels=8, size=8)
    assert memory.measure_memory_cuda_isolated(config, timeout_s=60)["isolation"] == "spawn"
    assert methods == []

    class Stop(Exception):
        pass

    def stop_before_starting(self: Any) -> None:
        raise Stop

    monkeypatch.setattr(multiprocessing.context.ForkServerProcess, "start", stop_before_starting)
    with pytest.raises(Stop):
        memory.measure_memory_cpu(dataclasses.replace(config, device="cpu"), isolation="forkserver")
    assert methods == ["forkserver"]


def test_a_spawned_worker_that_hangs_is_killed_at_the_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                              fake_workers: Path) -> None:
    config = Config(stage="memory", attn="se", mode="forward", device="cuda:0", batch=1, channels=8, size=8)
    start = time.monotonic()
    with pytest.raises(StageError) as info:
        memory.measure_memory_cuda_isolated(config, timeout_s=2)
    assert info.value.status == "timeout" and time.monotonic() - start < 10
    worker, helper = map(int, fake_workers.read_text().split())
    assert _gone(worker) and _gone(helper)
    assert subprocess.run(["true"]).returncode == 0  # this process is still sound
