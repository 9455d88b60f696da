"""The GPU environment describes the device measured, and its state is read from nvidia-smi or
NVML: tested on the CPU with a fake ``torch.cuda`` (two GPUs) and a fake ``nvidia-smi``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from types import SimpleNamespace

import pytest
import torch

from suite import env
from suite.records import ENVIRONMENT_FIELDS

GPUS = {
    0: SimpleNamespace(name="NVIDIA A100-SXM4-40GB", major=8, minor=0, multi_processor_count=108,
                       total_memory=40 * 2**30, L2_cache_size=40 * 2**20, uuid="00000000-0000-0000-0000-00000000000a"),
    1: SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, multi_processor_count=132,
                       total_memory=80 * 2**30, L2_cache_size=50 * 2**20, uuid="00000000-0000-0000-0000-00000000000b"),
}
SMI_IDENTITY = {"GPU-00000000-0000-0000-0000-00000000000a": "GPU-00000000-0000-0000-0000-00000000000a, 550.54.15",
                "GPU-00000000-0000-0000-0000-00000000000b": "GPU-00000000-0000-0000-0000-00000000000b, 550.54.15"}


@pytest.fixture()
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch sees two CUDA devices (current: 0) and no pynvml is importable."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: GPUS[index])
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    monkeypatch.setitem(sys.modules, "pynvml", None)


class FakeSmi:
    """nvidia-smi that answers identity and state queries for the device named by ``-i``."""

    def __init__(self, state: str = "1980, 2619, 41, 312.50, 0x0000000000000004") -> None:
        self.calls: list[list[str]] = []
        self.state = state

    def __call__(self, argv: Sequence[str]) -> str:
        self.calls.append(list(argv))
        target = argv[argv.index("-i") + 1]
        if "uuid,driver_version" in argv[1]:
            return SMI_IDENTITY[target] + "\n"
        return self.state + "\n"


def missing_smi(argv: Sequence[str]) -> str:
    raise FileNotFoundError("nvidia-smi")


def test_the_environment_describes_the_device_measured(two_gpus: None) -> None:
    smi = FakeSmi()
    gpu = env.gpu_environment("cuda:1", runner=smi)
    assert gpu == {
        "gpu": "NVIDIA H100 80GB HBM3", "gpu_index": 1, "gpu_uuid": "GPU-00000000-0000-0000-0000-00000000000b",
        "compute_capability": "9.0", "gpu_sms": 132, "gpu_memory_bytes": 80 * 2**30, "gpu_l2_bytes": 50 * 2**20,
        "gpu_driver": "550.54.15", "cuda": "12.4", "cudnn": 90100,
    }
    assert smi.calls[0][-2:] == ["-i", "GPU-00000000-0000-0000-0000-00000000000b"]  # the measured GPU, by UUID


def test_collect_environment_records_the_given_device_not_gpu_0(two_gpus: None) -> None:
    recorded = env.collect_environment("cuda:1", runner=FakeSmi())
    assert (recorded["gpu"], recorded["gpu_driver"], recorded["cuda"]) == ("NVIDIA H100 80GB HBM3", "550.54.15", "12.4")
    assert set(recorded) <= set(ENVIRONMENT_FIELDS)  # the records' fields and fingerprints are unchanged


def test_collect_environment_defaults_to_the_current_cuda_device(two_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert env.collect_environment(runner=FakeSmi())["gpu"] == "NVIDIA H100 80GB HBM3"
    assert env.gpu_environment("cuda", runner=FakeSmi())["gpu_index"] == 1


def test_a_cpu_device_has_empty_gpu_fields(two_gpus: None) -> None:
    smi = FakeSmi()
    gpu = env.gpu_environment("cpu", runner=smi)
    assert set(gpu) == set(env.gpu_environment("cuda:0", runner=smi))
    assert not any(gpu.values())
    assert env.gpu_state("cpu", runner=smi) == {}
    recorded = env.collect_environment("cpu", runner=smi)
    assert (recorded["gpu"], recorded["gpu_driver"], recorded["cuda"]) == ("", "", "")


def test_without_cuda_every_device_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert env.gpu_environment("cuda:0", runner=missing_smi)["gpu"] == ""
    assert env.gpu_state("cuda:0", runner=missing_smi) == {}


def test_gpu_state_reads_clocks_temperature_power_and_throttling(two_gpus: None) -> None:
    smi = FakeSmi()
    state = env.gpu_state("cuda:1", runner=smi)
    assert state == {"gpu_sm_clock_mhz": 1980, "gpu_mem_clock_mhz": 2619, "gpu_temperature_c": 41,
                     "gpu_power_w": 312.5, "gpu_throttle_mask": 4, "gpu_throttle_reasons": "sw_power_cap"}
    assert smi.calls == [["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw,"
                          "clocks_throttle_reasons.active", "--format=csv,noheader,nounits",
                          "-i", "GPU-00000000-0000-0000-0000-00000000000b"]]


def test_gpu_state_keeps_what_the_device_does_not_report_as_none(two_gpus: None) -> None:
    state = env.gpu_state("cuda:0", runner=FakeSmi("1410, 1215, 35, [N/A], 0x0000000000000061"))
    assert state["gpu_power_w"] is None and state["gpu_sm_clock_mhz"] == 1410
    assert state["gpu_throttle_reasons"] == "gpu_idle,sw_thermal_slowdown,hw_thermal_slowdown"


def test_without_nvidia_smi_or_pynvml_the_state_is_empty_and_the_driver_blank(two_gpus: None) -> None:
    assert env.gpu_state("cuda:0", runner=missing_smi) == {}
    gpu = env.gpu_environment("cuda:0", runner=missing_smi)
    assert gpu["gpu_driver"] == "" and gpu["gpu"] == "NVIDIA A100-SXM4-40GB"
    assert gpu["gpu_uuid"] == "GPU-00000000-0000-0000-0000-00000000000a"  # torch's own UUID
    failing = env.gpu_state("cuda:0", runner=lambda argv: (_ for _ in ()).throw(subprocess.TimeoutExpired(argv, 10)))
    assert failing == {}


class FakeNvml(SimpleNamespace):
    """pynvml's calls that :func:`suite.env.gpu_state` and :func:`suite.env.gpu_environment` use."""

    class NVMLError(Exception):
        pass

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    def __init__(self) -> None:
        super().__init__(handles=[], shutdowns=0)

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetHandleByUUID(self, uuid: bytes) -> str:
        if not isinstance(uuid, bytes):  # pynvml hands the UUID to ctypes' c_char_p
            raise TypeError("bytes or integer address expected instead of str instance")
        self.handles.append(uuid.decode())
        return uuid.decode()

    def nvmlDeviceGetClockInfo(self, handle: str, clock: int) -> int:
        return {1: 1755, 2: 2619}[clock]

    def nvmlDeviceGetTemperature(self, handle: str, sensor: int) -> int:
        return 52

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        raise self.NVMLError("Not Supported")

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: str) -> int:
        return 0x8

    def nvmlDeviceGetUUID(self, handle: str) -> bytes:
        return handle.encode()

    def nvmlSystemGetDriverVersion(self) -> str:
        return "535.104.05"


def test_pynvml_answers_where_nvidia_smi_cannot(two_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    state = env.gpu_state("cuda:1", runner=missing_smi)
    assert state == {"gpu_sm_clock_mhz": 1755, "gpu_mem_clock_mhz": 2619, "gpu_temperature_c": 52,
                     "gpu_power_w": None, "gpu_throttle_mask": 8, "gpu_throttle_reasons": "hw_slowdown"}
    gpu = env.gpu_environment("cuda:1", runner=missing_smi)
    assert (gpu["gpu_uuid"], gpu["gpu_driver"]) == ("GPU-00000000-0000-0000-0000-00000000000b", "535.104.05")
    assert set(nvml.handles) == {"GPU-00000000-0000-0000-0000-00000000000b"} and nvml.shutdowns == 2


def test_the_device_is_asked_for_by_its_uuid_as_bytes_or_as_text(two_gpus: None,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """pynvml's ``nvmlDeviceGetHandleByUUID`` takes bytes (ctypes' ``c_char_p``); one that takes
    text only is asked again with text. The environment and the latency stage's check of other
    GPU processes ask the same way."""
    from suite.timing import cuda

    nvml = FakeNvml()
    nvml.nvmlDeviceGetComputeRunningProcesses = lambda handle: [SimpleNamespace(pid=7, usedGpuMemory=2**20)]
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(cuda, "_pynvml", lambda: nvml)
    uuid = "GPU-00000000-0000-0000-0000-00000000000b"
    assert env.gpu_environment("cuda:1", runner=missing_smi)["gpu_uuid"] == uuid
    assert cuda.query_gpu_processes(1) == [cuda.GpuProcess(7, 1.0)]
    assert nvml.handles == [uuid, uuid]

    def text_only(target: object) -> str:
        if not isinstance(target, str):
            raise TypeError("expected str")
        nvml.handles.append(target)
        return target

    nvml.nvmlDeviceGetHandleByUUID = text_only
    nvml.handles.clear()
    assert env.gpu_state("cuda:1", runner=missing_smi)["gpu_sm_clock_mhz"] == 1755
    assert cuda.query_gpu_processes(1) == [cuda.GpuProcess(7, 1.0)]
    assert nvml.handles == [uuid, uuid]


def test_without_a_uuid_the_visible_devices_name_the_gpu(two_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: SimpleNamespace(**{**vars(GPUS[index]), "uuid": None}))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    smi = FakeSmi()
    env.gpu_state("cuda:1", runner=lambda argv: smi.calls.append(list(argv)) or smi.state)
    assert smi.calls[0][-2:] == ["-i", "5"]


def test_a_device_torch_refuses_is_named(two_gpus: None) -> None:
    with pytest.raises(ValueError, match="'gpu:0'"):
        env.gpu_environment("gpu:0")


def test_the_records_of_a_cuda_run_carry_the_whole_gpu_environment(two_gpus: None) -> None:
    recorded = env.collect_environment("cuda:1", runner=FakeSmi())
    assert (recorded["compute_capability"], recorded["gpu_sms"], recorded["gpu_memory_bytes"],
            recorded["cudnn"]) == ("9.0", 132, 80 * 2**30, 90100)
    on_cpu = env.collect_environment("cpu", runner=FakeSmi())
    assert "compute_capability" not in on_cpu  # a CPU run's environment keeps its fields


def test_a_cuda_latency_run_records_the_gpu_state_before_and_after(two_gpus: None, monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path) -> None:
    from suite.records import RecordStore
    from suite.timing import cli_latency

    monkeypatch.setattr(cli_latency, "gpu_state", lambda device: {"gpu_sm_clock_mhz": 1980, "device_asked": device})
    store = RecordStore(tmp_path / "records.jsonl")
    plan = SimpleNamespace(torch_device=torch.device("cuda:1"))
    cli_latency._record_gpu_state(store, plan, "before")
    cli_latency._record_gpu_state(store, SimpleNamespace(torch_device=torch.device("cpu")), "before")
    cli_latency._record_gpu_state(store, plan, "after")
    records = store.read()
    assert [(r["record"], r["when"], r["device_asked"]) for r in records] == [
        ("gpu_state", "before", "cuda:1"), ("gpu_state", "after", "cuda:1")]
    assert list(cli_latency.tables(records)) == ["latency.csv", "gpu_state.csv"]


def test_report_captions_say_the_timing_mode_and_count_host_bound_rows() -> None:
    import pandas as pd

    from suite.report.render import _caption

    frame = pd.DataFrame({"status": ["ok", "ok", "ok"], "device": ["cuda:0"] * 3, "dtype": ["bf16"] * 3,
                          "threads": [1] * 3, "timing_mode": ["eager-launch"] * 3, "host_bound": [True, False, True]})
    caption = _caption("gpu-quick", frame, {"gpu": "NVIDIA H100 80GB HBM3"})
    assert "timing eager-launch" in caption and "2 of 3 rows host-bound" in caption
    assert "host-bound" not in _caption("cpu", frame.drop(columns=["timing_mode", "host_bound"]), {})
