"""The worker protocol: a :class:`Job` serialises to the dict every revision's worker reads, and
back; the gate's settings keep the key names earlier workers and the committed baselines use."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from suite.regress.cases import GateCase, RegressSettings, case_id, gate_job
from suite.timing.contention import ContentionLimits
from suite.timing.grid import Config
from suite.timing.job import Job
from suite.timing.timer import RoundOptions
from suite.timing.worker import ROUND, WorkerState, run_job

BASELINES = Path(__file__).resolve().parents[1] / "suite" / "regress" / "baselines"


def _latency_job() -> Job:
    return Job(threads=1, device="cpu", cudnn_benchmark=True, options=RoundOptions(sample_s=0.1),
               limits=ContentionLimits(), retries=2)


def test_a_latency_job_on_the_wire_is_the_dict_the_worker_reads() -> None:
    config = Config(stage="latency", attn="se", mode="forward", batch=1, channels=8, size=8)
    wire = _latency_job().with_items([config]).to_wire()
    earlier_workers_read = {**{k: v for k, v in asdict(config).items() if k != "attn"}, "name": "se"}
    strict_limits_earlier_workers_read = {k: v for k, v in asdict(ContentionLimits()).items() if k != "policy"}
    assert wire["configs"] == [earlier_workers_read]  # every revision's worker builds Config from these
    assert Config.from_wire(wire["configs"][0]) == config
    assert wire == {"configs": [earlier_workers_read], "options": asdict(RoundOptions(sample_s=0.1)),
                    "limits": strict_limits_earlier_workers_read, "retries": 2, "threads": 1, "device": "cpu",
                    "flush_denormal": False, "cudnn_benchmark": True, "tf32": False}
    back = Job.from_wire(json.loads(json.dumps(wire)))
    assert back == _latency_job().with_items([config])
    assert isinstance(back.options, RoundOptions) and isinstance(back.limits, ContentionLimits)


def test_a_gate_job_keeps_the_keys_earlier_workers_read() -> None:
    settings = RegressSettings(attn=("se",), mode=("forward",), visits=2)
    cases = [GateCase(name, mode, case_id(name, mode, settings)) for name, mode in settings.cases()]
    wire = json.loads(gate_job(settings).with_items(cases).to_line())
    assert set(wire) == {"runner", "gate_settings", "threads", "flush_denormal", "device", "cudnn_benchmark",
                         "tf32", "configs"}
    assert wire["runner"] == "suite.regress.cases:gate_case" and wire["configs"] == [asdict(c) for c in cases]
    assert wire["gate_settings"]["modes"] == ["forward"] and wire["gate_settings"]["repeats"] == 2
    assert "mode" not in wire["gate_settings"] and "visits" not in wire["gate_settings"]
    assert RegressSettings.from_json(wire["gate_settings"]) == settings


def test_the_gate_settings_read_both_forms_and_the_committed_baselines() -> None:
    settings = RegressSettings(attn=("se", "eca"), mode=("train",), visits=4)
    assert RegressSettings.from_json(json.loads(json.dumps(settings.to_json()))) == settings
    assert RegressSettings.from_json(json.loads(json.dumps(settings.to_wire()))) == settings
    for path in sorted(BASELINES.glob("*.json")):
        stored = RegressSettings.from_json(json.loads(path.read_text())["settings"])
        assert stored.visits >= 1 and set(stored.mode) <= {"forward", "train"}


def test_a_job_refuses_a_thread_count_below_one() -> None:
    with pytest.raises(ValueError, match="threads must be a positive int"):
        Job(threads=0)


def echo(raw: dict, job: Job) -> tuple[str, object]:
    """A runner for the test below: the item's key and its fields back, with the job's threads."""
    return raw["case"], lambda: {"status": "ok", "threads": job.threads, **raw}


def test_run_job_writes_one_round_line_per_item_with_the_settings_in_force() -> None:
    job = Job(threads=1, runner=f"{__name__}:echo").with_items([{"case": "a"}, {"case": "b"}])
    out = io.StringIO()
    state = WorkerState()
    threads = torch.get_num_threads()
    try:
        run_job(job, out, state)
    finally:
        torch.set_num_threads(threads)  # the worker sets the process's threads; this process goes on
    lines = [json.loads(line[len(ROUND):]) for line in out.getvalue().splitlines()]
    assert [line["key"] for line in lines] == ["a", "b"]
    assert all(line["threads_set"] == 1 and line["flush_denormal"] == "off" for line in lines)
    assert state.flush_denormal == "off"


def test_a_model_level_reference_is_warmed_up_beside_every_design() -> None:
    from suite.timing.grid import Config
    from suite.timing.worker import WorkerState, _calibration

    state = WorkerState()
    module = Config(stage="latency", attn="se", mode="forward", channels=64, size=14, batch=2)
    model = Config(stage="latency", attn="se", mode="forward", level="model", arch="resnet18", channels=3, size=64,
                   batch=1)
    state.calls.update({"m": (3, 0.01), "n": (1, 0.02)})
    assert _calibration(module, state, "m") == {"reference": (3, 0.01)}  # the 3x3 conv's warm-up is skipped
    assert _calibration(model, state, "n") is None  # the backbone's is not
    assert _calibration(module, state, "absent") is None
