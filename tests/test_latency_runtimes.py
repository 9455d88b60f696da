"""The runtime axis (``--compile eager,compile,onnxruntime,openvino``): exported workloads run and
match eager, the export cache serves later builds, settings and missing packages an exported
runtime cannot run are ``unsupported`` before any work, export failures name the operator, and
each runtime keeps its own reference. Tiny shapes, nothing timed."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from suite.timing import cli_latency, runtimes, workloads
from suite.timing.contention import ContentionLimits
from suite.timing.grid import COMPILE_MODES, Config
from suite.timing.job import Job
from suite.timing.timer import RoundOptions
from suite.timing.worker import ROUND, WorkerState, run_job
from suite.timing.workloads import StageError, build_workload

ROOT = Path(__file__).resolve().parents[1]
SHAPE = {"batch": 2, "channels": 16, "size": 8}


def _config(runtime: str = "onnxruntime", **kw) -> Config:
    return Config(**{"stage": "latency", "attn": "se", "mode": "forward", "compile": runtime, **SHAPE, **kw})


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One export cache (``$ATTNBENCH_CACHE``) for this file's tests."""
    root = tmp_path_factory.mktemp("attnbench-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ATTNBENCH_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def two_builds(cache: Path) -> tuple[workloads.Workload, workloads.Workload]:
    """The same onnxruntime configuration built twice: an export, then the cache."""
    pytest.importorskip("onnxruntime")
    return build_workload(_config()), build_workload(_config())


def test_the_runtime_axis_accepts_its_runtimes_and_refuses_others_clearly() -> None:
    assert COMPILE_MODES == ("eager", "compile", "onnxruntime", "openvino")
    assert _config("onnxruntime").key().split("|")[8] == "onnxruntime"
    assert _config("eager").key() == "latency|module|-|se|forward|cpu|fp32|contiguous|eager|b2|c16|s8|t1"
    with pytest.raises(ValueError, match=r"compile \(the runtime\) must be one of eager, compile, onnxruntime, "
                                         r"openvino; got 'tensorrt'"):
        _config("tensorrt")
    parser = argparse.ArgumentParser()
    cli_latency.add_arguments(parser)
    assert parser.parse_args(["--compile", "eager,onnxruntime,openvino"]).compile == ("eager", "onnxruntime", "openvino")
    with pytest.raises(SystemExit):
        parser.parse_args(["--compile", "onnxruntime,tensorrt"])


def test_an_onnxruntime_step_matches_eager_and_its_reference_is_the_exported_conv(two_builds) -> None:
    first, _ = two_builds
    out = first.step()
    assert not isinstance(out, torch.Tensor)  # ORT's array, not an eager forward
    with torch.no_grad():
        expected = first.module(first.input)
    torch.testing.assert_close(torch.as_tensor(out), expected, atol=1e-4, rtol=0)
    assert first.reference_name == "conv3x3(16->16)" and first.reference_step().shape == (2, 16, 8, 8)
    assert first.facts["exporter"] in ("dynamo", "torchscript")
    assert first.facts["runtime_version"].startswith("onnxruntime ")
    assert first.facts["runtime_max_abs_err"] < 1e-4
    assert first.compile_s > 0 and first.output_shape == (2, 16, 8, 8) and first.params > 0


def test_a_second_build_takes_the_export_from_the_cache(two_builds, cache: Path) -> None:
    first, second = two_builds
    assert (first.facts["export_cache"], first.facts["reference_export_cache"]) == ("miss", "miss")
    assert (second.facts["export_cache"], second.facts["reference_export_cache"]) == ("hit", "hit")
    assert first.facts["export_s"] > 0 and second.facts["export_s"] == 0
    assert second.compile_s < first.compile_s and second.compile_s == pytest.approx(second.facts["session_s"], abs=1e-3)
    assert second.facts["exporter"] == first.facts["exporter"]
    stored = sorted(p.name for p in (cache / "latency" / "onnx").glob("*.onnx"))
    assert len(stored) == 2 and stored[0].startswith("module-reference-") and stored[1].startswith("module-se-")
    torch.testing.assert_close(torch.as_tensor(second.step()), torch.as_tensor(first.step()))


def test_the_export_cache_key_names_what_decides_the_graph() -> None:
    module = torch.nn.Conv2d(4, 4, 3)
    key = runtimes.export_cache_key(module, _config(), "module")
    assert key == runtimes.export_cache_key(module, _config("openvino", threads=2), "module")  # not runtime, threads
    assert key != runtimes.export_cache_key(module, _config(size=16), "module")
    reference = runtimes.export_cache_key(module, _config(), "reference")
    assert "attn" not in reference["axes"] and "weights" not in reference
    assert reference == runtimes.export_cache_key(module, _config(attn="eca"), "reference")
    with torch.no_grad():
        module.weight.add_(1)
    assert runtimes.export_cache_key(module, _config(), "module") != key


def test_each_runtime_keeps_its_own_reference_in_a_worker(two_builds) -> None:
    references: dict = {}
    exported = build_workload(_config(), references)
    eager = build_workload(_config("eager"), references)
    assert sorted(references) == ["latency|module|-|forward|cpu|fp32|contiguous|eager|b2|c16|s8|t1",
                                  "latency|module|-|forward|cpu|fp32|contiguous|onnxruntime|b2|c16|s8|t1"]
    assert isinstance(eager.reference_step(), torch.Tensor) and not isinstance(exported.reference_step(), torch.Tensor)
    again = build_workload(_config(attn="eca"), references)  # a second design of the shape reuses the exported one
    assert again.reference_step is exported.reference_step and len(references) == 2
    assert again.facts["reference_exporter"] == exported.facts["reference_exporter"]
    assert "reference_export_s" not in again.facts  # built in an earlier configuration: nothing paid here


@pytest.mark.parametrize(("runtime", "setting", "reason"), [
    ("onnxruntime", {"mode": "train"}, "mode train: onnxruntime runs inference only"),
    ("onnxruntime", {"dtype": "bf16"}, "dtype bf16: onnxruntime rows are fp32"),
    ("onnxruntime", {"memory_format": "channels_last"}, "memory format channels_last"),
    ("openvino", {"device": "cuda"}, "device cuda: openvino is measured on the CPU"),
])
def test_settings_an_exported_runtime_cannot_run_are_unsupported_before_any_work(
        monkeypatch: pytest.MonkeyPatch, runtime: str, setting: dict, reason: str) -> None:
    def nothing_may_be_built(*args, **kwargs):
        raise AssertionError("built or exported before the settings were checked")

    monkeypatch.setattr(workloads, "instantiate", nothing_may_be_built)
    monkeypatch.setattr(torch.onnx, "export", nothing_may_be_built)
    with pytest.raises(StageError) as refused:
        build_workload(_config(runtime, **setting))
    assert refused.value.status == "unsupported" and reason in str(refused.value)


@pytest.mark.parametrize(("runtime", "package"), [("onnxruntime", "onnxruntime"), ("onnxruntime", "onnx"),
                                                  ("openvino", "openvino")])
def test_a_missing_package_is_unsupported(monkeypatch: pytest.MonkeyPatch, runtime: str, package: str) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if it were not installed
    monkeypatch.setattr(workloads, "instantiate", lambda *a, **k: pytest.fail("built without its runtime"))
    with pytest.raises(StageError) as refused:
        build_workload(_config(runtime))
    assert refused.value.status == "unsupported" and str(refused.value) == f"{package} is not installed"


def test_an_export_failure_is_an_export_error_naming_the_operator(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path))
    tried: list[bool] = []

    def failing_export(model, args, f, *, dynamo: bool = True, **kwargs):
        tried.append(dynamo)
        raise RuntimeError("Exporting the operator 'aten::fancy_gate' to ONNX opset version 20 is not supported")

    monkeypatch.setattr(torch.onnx, "export", failing_export)
    with pytest.raises(StageError) as failed:
        build_workload(_config())
    assert tried == [True, False]  # the default (dynamo) exporter, then the TorchScript one
    assert failed.value.status == "export_error" and failed.value.details == {"failed_op": "aten::fancy_gate"}
    message = str(failed.value)
    assert message.startswith("torch.onnx.export failed at aten::fancy_gate (dynamo exporter: RuntimeError")
    assert "torchscript exporter: RuntimeError" in message
    assert not list((tmp_path / "latency" / "onnx").iterdir())  # nothing half-written is left to be hit


def test_the_worker_records_an_export_error_with_its_operator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path))

    def failing_export(*args, **kwargs):
        raise RuntimeError("Unsupported FX nodes: {'call_function': ['aten.fancy_gate.default']}")

    monkeypatch.setattr(torch.onnx, "export", failing_export)
    job = Job(threads=1, options=RoundOptions(sample_s=0.01), limits=ContentionLimits()).with_items([_config()])
    out = io.StringIO()
    threads = torch.get_num_threads()
    try:
        assert run_job(job, out, WorkerState()) == 0
    finally:
        torch.set_num_threads(threads)
    (line,) = [json.loads(text[len(ROUND):]) for text in out.getvalue().splitlines()]
    assert line["status"] == "export_error" and line["failed_op"] == "aten.fancy_gate.default"
    assert "failed at aten.fancy_gate.default" in line["message"] and "traceback" in line


@pytest.mark.parametrize(("text", "op"), [
    ("<class 'torch.onnx._internal.exporter._errors.DispatchError'>: No ONNX function found for "
     "<OpOverload(op='aten._linalg_eigh', overload='default')>. Failure message: ...", "aten._linalg_eigh.default"),
    ("Error when translating node %histc : [num_users=1] = call_function[target=torch.ops.aten.histc.default]"
     "(args = (%x, 4), kwargs = {})", "aten.histc.default"),
    ("Unsupported FX nodes: {'call_function': ['aten.fancy_gate.default', 'aten.other.default']}",
     "aten.fancy_gate.default"),
    ("Exporting the operator 'aten::linalg_eigvalsh' to ONNX opset version 20 is not supported", "aten::linalg_eigvalsh"),
    ("Unsupported: ONNX export of operator adaptive_avg_pool2d, output size that are not factor of input size",
     "adaptive_avg_pool2d"),
    ("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for Gelu(20) node with name ''",
     "Gelu"),
    ("\x1b[96msomething\x1b[0m else failed", ""),
])
def test_failed_op_reads_the_operator_exporters_and_runtimes_name(text: str, op: str) -> None:
    assert runtimes.failed_op(text) == op


def test_workers_get_a_persistent_inductor_cache_for_compile_only(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path))
    assert runtimes.runtime_environment(["eager", "compile"], {}) == {
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "latency" / "inductor")}
    assert runtimes.runtime_environment(["compile"], {"TORCHINDUCTOR_CACHE_DIR": "/elsewhere"}) == {}
    assert runtimes.runtime_environment(["eager", "onnxruntime"], {}) == {}
    assert runtimes.runtime_versions(["eager", "compile"]) == {}
    versions = runtimes.runtime_versions(["onnxruntime", "openvino"])
    assert list(versions) == ["onnxruntime_version", "onnx_version", "onnxscript_version", "openvino_version"]


def test_compile_cache_count_reads_torchs_cache_counters() -> None:
    from torch._dynamo.utils import counters

    outcomes = []
    for names in ([("inductor", "fxgraph_cache_hit")], [("aot_autograd", "autograd_cache_miss")],
                  [("inductor", "fxgraph_cache_hit"), ("inductor", "fxgraph_cache_miss")], []):
        with runtimes.CompileCacheCount() as count:
            for group, name in names:
                counters[group][name] += 1
        outcomes.append(count.outcome)
    assert outcomes == ["hit", "miss", "partial", "bypass"]


def test_an_openvino_step_matches_eager(cache: Path) -> None:
    pytest.importorskip("openvino")
    built = build_workload(_config("openvino"))
    with torch.no_grad():
        expected = built.module(built.input)
    torch.testing.assert_close(torch.as_tensor(built.step()), expected, atol=1e-4, rtol=0)
    assert built.facts["runtime_version"].startswith("openvino ") and built.reference_step().shape == (2, 16, 8, 8)


@pytest.mark.slow
def test_latency_under_onnxruntime_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "lat"
    env = {**os.environ, "ATTNBENCH_CACHE": str(tmp_path / "cache")}
    argv = [sys.executable, "-m", "suite", "latency", "--compile", "onnxruntime", "--attn", "se", "--batch", "1",
            "--size", "14", "--channels", "64", "--rounds", "2", "--budget-s", "0.05", "--out", str(out),
            "--no-progress", "--no-roofline", "--servers", "1", "--min-cpu-share", "0", "--max-other-cores", "99",
            "--max-steal", "1"]
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    rows = {r["mode"]: r for r in records if r.get("record") == "latency"}
    assert rows["forward"]["status"] == "ok" and rows["forward"]["compile"] == "onnxruntime"
    assert rows["forward"]["ratio"] > 0 and rows["forward"]["rounds"] == 2
    assert rows["train"]["status"] == "unsupported"
    rounds = [r for r in records if r.get("record") == "latency_round" and r["status"] != "unsupported"]
    assert [r["export_cache"] for r in rounds][:2] == ["miss", "hit"]  # later rounds load the cached export
    environments = [json.loads(line) for line in (out / "environments.jsonl").read_text().splitlines()]
    assert all(e["fields"]["env_onnxruntime_version"] != "absent" for e in environments)


def test_compiled_rows_never_fall_back_to_eager_silently() -> None:
    import torch

    from suite.timing.workloads import COMPILE_ENTRIES, _limit_recompiles

    config = torch._dynamo.config
    saved = {n: getattr(config, n) for n in ("recompile_limit", "fail_on_recompile_limit_hit") if hasattr(config, n)}
    try:
        _limit_recompiles()
        if hasattr(config, "recompile_limit"):
            assert config.recompile_limit >= COMPILE_ENTRIES
        if hasattr(config, "fail_on_recompile_limit_hit"):
            assert config.fail_on_recompile_limit_hit is True
    finally:
        for name, value in saved.items():
            setattr(config, name, value)
