"""``python -m suite report``: tables, figures and README re-rendered from raw stage outputs,
with stages missing, empty, failed or only left as raw records."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from suite.__main__ import main
from suite.env import PROJECT_ROOT
from suite.errors import UsageError
from suite.report import render_report
from suite.report.figure_data import pareto_front
from suite.report.load import load_stage
from suite.report.readme import FIGURE_TEXT
from suite.report.summary import summary_columns
from suite.stages import measuring_stages

TYPES = ["se", "eca", "cbam", "gsop"]
ENV = {"date": "2026-11-23T12:00:00+00:00", "commit": "abc123", "python": "3.11.7", "cpu": "Test CPU",
       "cpu_count": 2, "threads": 1, "torch_version": "2.14.1", "fvcore_version": "0.1.5", "thop_version": "0.1.1",
       "gpu": "", "cuda": ""}
PNG = b"\x89PNG\r\n\x1a\n"


def _cost(folder: Path) -> None:
    module, model = [], []
    for i, name in enumerate(TYPES):
        for size in (14, 28):
            macs = (i + 1) * 1000 * size * size
            module.append({"level": "module", "attn": name, "family": name, "kind": "gate", "placement": "block",
                           "arch": "", "batch": 1, "channels": 64, "height": size, "width": size, "status": "ok",
                           "message": "", "params_total": 100 * (i + 1), "params_formula": 100 * (i + 1),
                           "macs_formula": macs, "macs_fvcore": macs, "macs_fvcore_shipped": macs // 10,
                           "macs_fvcore_shipped_conv_linear": macs // 12, "macs_thop": macs,
                           "macs_thop_shipped": 0, "flops_torch": macs // 5, "macs_dispatch": macs,
                           "act_saved_bytes": 4 * macs, "fvcore_shipped_gap": "mean(unsupported)=+1", **ENV})
        model.append({"level": "model", "attn": name, "family": name, "kind": "gate", "placement": "block",
                      "arch": "resnet18", "batch": 1, "channels": 3, "height": 112, "width": 112, "status": "ok",
                      "params_total": 11_000_000 + 1000 * i, "macs_fvcore": 480_000_000 + 10**6 * (i + 1),
                      "delta_params_total": 1000 * (i + 1), "delta_macs_fvcore": 10**6 * (i + 1), **ENV})
    model.append({"level": "model", "attn": "none", "arch": "resnet18", "batch": 1, "channels": 3, "height": 112,
                  "width": 112, "status": "ok", "params_total": 11_000_000, "macs_fvcore": 480_000_000,
                  "delta_params_total": 0, "delta_macs_fvcore": 0, **ENV})
    model.append({"level": "model", "attn": "ccp_max", "arch": "resnet18", "status": "refused",
                  "message": "no place", **ENV})
    folder.mkdir(parents=True)
    pd.DataFrame(module).to_csv(folder / "cost_module.csv", index=False)
    pd.DataFrame(model).to_csv(folder / "cost_model.csv", index=False)


def _latency_rows() -> list[dict]:
    rows = []
    env = {f"env_{k}": v for k, v in ENV.items()}
    for i, name in enumerate(TYPES):
        for mode in ("forward", "train"):
            for batch in (2, 8):
                for size in (14, 28):
                    ref = 0.01 * batch * size
                    failed = name == "gsop" and batch == 8 and size == 28
                    rows.append({"record": "latency", "key": f"{name}|{mode}|{batch}|{size}", "name": name,
                                 "level": "module", "mode": mode, "device": "cpu", "dtype": "fp32",
                                 "memory_format": "contiguous", "compile": "eager", "batch": batch, "channels": 64,
                                 "size": size, "threads": 1, "status": "timeout" if failed else "ok",
                                 "median_ms": None if failed else ref * (0.1 + 0.3 * i),
                                 "ref_median_ms": ref, "ratio": None if failed else 0.1 + 0.3 * i,
                                 "reference": "conv3x3(64->64)", "loadavg_1m": 1.0, **env})
        for arch in ("resnet18", "resnet50"):
            ratio = 1.0 + 0.05 * i
            rows.append({"record": "latency", "key": f"model|{arch}|{name}", "name": name, "level": "model",
                         "arch": arch, "mode": "forward", "device": "cpu", "dtype": "fp32",
                         "memory_format": "contiguous", "compile": "eager", "batch": 1, "channels": 3, "size": 224,
                         "threads": 1, "status": "ok", "median_ms": 50 * ratio, "ref_median_ms": 50.0,
                         "ratio": ratio, "ratio_ci_low": ratio * 0.98, "ratio_ci_high": ratio * 1.02,
                         "reference": f"{arch}(attn=None)", "loadavg_1m": 1.0, **env})
    rows.append({"record": "latency", "key": "contended", "name": TYPES[1], "level": "module", "mode": "forward",
                 "device": "cpu", "dtype": "fp32", "memory_format": "contiguous", "compile": "eager", "batch": 32,
                 "channels": 64, "size": 14, "threads": 1, "status": "contended", "median_ms": None, "ratio": None,
                 "message": "2 of 8 rounds clean after 16 tries", "loadavg_1m": 2.5, **env})
    return rows


def _latency(folder: Path) -> None:
    folder.mkdir(parents=True)
    pd.DataFrame(_latency_rows()).to_csv(folder / "latency.csv", index=False)


def _memory(folder: Path) -> None:
    rows = [{"name": name, "level": "module", "mode": "train", "device": "cpu", "dtype": "fp32", "batch": 2,
             "channels": 64, "size": 28, "threads": 1, "status": "ok", "input_bytes": 401408,
             "act_saved_bytes": 401408 * (i + 1), "step_rss_bytes": 2**20 * (i + 1), "peak_rss_bytes": 4 * 2**28,
             **{f"env_{k}": v for k, v in ENV.items()}} for i, name in enumerate(TYPES)]
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "memory.csv", index=False)


def _accuracy(folder: Path) -> None:
    """Only the raw runs.jsonl: the report rebuilds the deltas from it."""
    folder.mkdir(parents=True)
    lines = []
    for seed in range(3):
        for i, name in enumerate(["none", *TYPES[:3]]):
            lines.append(json.dumps({"key": f"{name}|{seed}", "attn": name, "seed": seed, "status": "ok",
                                     "profile": "cpu", "arch": "resnet18", "recipe": "r1",
                                     "top1": 0.70 + 0.01 * i + 0.003 * seed, "top5": 0.95, **ENV}))
    (folder / "runs.jsonl").write_text("\n".join(lines) + "\n{\"torn", encoding="utf-8")


@pytest.fixture()
def profile_dir(tmp_path: Path) -> Path:
    raw = tmp_path / "cpu" / "raw"
    _cost(raw / "cost")
    _latency(raw / "latency")
    _memory(raw / "memory")
    _accuracy(raw / "accuracy")
    return tmp_path / "cpu"


def _check_png(path: Path, min_kib: float = 15) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG, path
    assert len(data) > min_kib * 1024, f"{path} is only {len(data)} bytes"


@pytest.mark.slow
def test_render_full(profile_dir: Path) -> None:
    result = render_report(profile_dir)
    assert result["profile"] == "cpu"
    assert result["stages"] == {"cost": "ok", "latency": "ok", "memory": "ok", "accuracy": "ok"}
    summary = pd.read_csv(profile_dir / "summary.csv")
    assert list(summary.columns) == summary_columns()
    assert sorted(summary["attn"]) == sorted([*TYPES, "ccp_max"])  # one row per type, no baseline
    assert summary.set_index("attn").loc["ccp_max", "status"] == "no results"  # refused by the backbone
    se = summary.set_index("attn").loc["se"]
    assert se["params_over_conv3x3"] == pytest.approx(100 / (9 * 64 * 64))
    assert se["extra_macs_pct"] == pytest.approx(100 * 1e6 / 480e6)
    assert se["latency_ratio_fwd"] == pytest.approx(0.1)
    assert se["n_seeds"] == 3 and se["top1_delta_pp"] == pytest.approx(1.0)
    assert summary.set_index("attn").loc["gsop", "status"] == "partial"  # one timed-out configuration
    contended = summary.set_index("attn").loc[TYPES[1]]
    assert contended["latency_contended"] == 1 and "contended" in contended["problems"]
    assert se["model_latency_ratio_fwd"] == pytest.approx(1.0)
    assert se["model_latency_fwd_by_arch"] == "resnet18 1 [0.98, 1.02]; resnet50 1 [0.98, 1.02]"

    columns = {
        "cost.csv": ["level", "attn", "macs_fvcore", "macs_formula", "flops_torch", "conv3x3_macs",
                     "macs_over_conv3x3", "extra_macs_fvcore", "extra_macs_pct", "backbone_macs_fvcore"],
        "latency.csv": ["attn", "mode", "batch", "size", "median_ms", "ref_median_ms", "ratio", "status"],
        "memory.csv": ["attn", "act_saved_bytes", "act_saved_over_input", "step_peak_bytes"],
        "accuracy.csv": ["attn", "top1_pct", "top1_delta_pp", "top1_ci_low_pp", "top1_ci_high_pp", "n_seeds"],
    }
    for name, wanted in columns.items():
        frame = pd.read_csv(profile_dir / name)
        assert not frame.empty, name
        assert set(wanted) <= set(frame.columns), (name, set(wanted) - set(frame.columns))

    readme = (profile_dir / "README.md").read_text(encoding="utf-8")
    assert set(result["figures"]) == set(FIGURE_TEXT)  # every figure drawn has its README text
    for key, path in result["figures"].items():
        assert path is not None, (key, result["figure_notes"])
        _check_png(Path(path))
        assert f"](figures/{Path(path).name})" in readme
    assert "| `se` |" in readme and "Test CPU" in readme and "abc123" in readme
    assert "MACs vs FLOPs" in readme
    assert "Incomplete" in readme and "latency" in readme.split("Incomplete")[1].splitlines()[0]


def test_missing_and_empty_stages(profile_dir: Path) -> None:
    raw = profile_dir / "raw"
    shutil.rmtree(raw / "latency")
    shutil.rmtree(raw / "accuracy")
    (raw / "memory" / "memory.csv").write_text("")  # a stage that died before its first row
    render_report(profile_dir)  # a first render draws every figure it can
    result = render_report(profile_dir, profile="smoke")
    assert result["stages"] == {"cost": "ok", "latency": "missing", "memory": "empty", "accuracy": "missing"}
    summary = pd.read_csv(profile_dir / "summary.csv")
    assert sorted(summary["attn"]) == sorted([*TYPES, "ccp_max"])
    assert summary["latency_ratio_fwd"].isna().all()
    assert pd.read_csv(profile_dir / "latency.csv").empty
    figures = result["figures"]
    assert figures["latency_heatmap"] is None and figures["cost_benefit"] is None
    assert not (profile_dir / "figures" / "latency_heatmap.png").exists()
    _check_png(Path(figures["counter_agreement"]))
    _check_png(Path(figures["memory"]), min_kib=5)  # falls back to the cost stage's saved bytes
    readme = (profile_dir / "README.md").read_text(encoding="utf-8")
    assert "missing stages: latency, accuracy; stages without rows: memory" in readme
    assert "_Not drawn:" in readme and "`smoke` profile" in readme


def test_nothing_at_all(tmp_path: Path) -> None:
    (tmp_path / "gpu" / "raw").mkdir(parents=True)
    result = render_report(tmp_path / "gpu")
    assert all(state == "missing" for state in result["stages"].values())
    assert all(path is None for path in result["figures"].values())
    assert pd.read_csv(tmp_path / "gpu" / "summary.csv").empty
    assert "missing stages: cost, latency, memory, accuracy" in (tmp_path / "gpu" / "README.md").read_text()
    with pytest.raises(UsageError, match="no such folder"):
        render_report(tmp_path / "absent")


@pytest.mark.slow
def test_latency_rebuilt_from_records(profile_dir: Path) -> None:
    """A sweep killed before it wrote latency.csv: the raw records still render."""
    folder = profile_dir / "raw" / "latency"
    (folder / "latency.csv").unlink()
    with (folder / "records.jsonl").open("w") as handle:
        for row in _latency_rows():
            handle.write(json.dumps(row) + "\n")
    result = render_report(profile_dir)
    assert result["stages"]["latency"] == "ok"
    assert any("built from records.jsonl" in n for n in result["notes"]["latency"])
    assert len(pd.read_csv(profile_dir / "latency.csv")) == len(_latency_rows())


@pytest.mark.slow
def test_cli(profile_dir: Path, capsys) -> None:
    assert main(["report", "--out", str(profile_dir), "--profile", "cpu"]) == 0
    assert "5 attention types" in capsys.readouterr().out
    assert main(["report", "--out", str(profile_dir / "nope")]) == 2


def test_pareto_front() -> None:
    # cost x (lower is better), benefit y (higher is better)
    mask = pareto_front([1, 2, 3, 4], [0.0, 1.0, 0.5, 2.0])
    assert mask.tolist() == [True, True, False, True]


def test_every_table_built_from_the_records_matches_the_stage_csvs() -> None:
    """The report builds every table of the committed reference run from its raw records; each
    equals the CSV the stage wrote, including columns the stage derives (cost's ``delta_*`` over
    the baseline), except the accuracy deltas' verdicts, now on Holm-adjusted p-values."""
    reference = PROJECT_ROOT / "reports" / "cpu" / "raw"
    if not reference.is_dir():
        pytest.skip("no committed reports/cpu/raw")
    for stage, spec in measuring_stages().items():
        if spec.optional and not (reference / stage).is_dir():
            continue  # a stage the reference profile did not run
        built = load_stage(reference, stage)
        assert built.state == "ok", stage
        assert any("built from" in note for note in built.notes), stage
        for name, filename in spec.files.items():
            if not (reference / stage / filename).is_file():
                continue
            written = pd.read_csv(reference / stage / filename)
            if name in spec.csv_only:
                pd.testing.assert_frame_equal(built.tables[name], written, obj=f"{stage}/{name}")
                continue
            as_csv = pd.read_csv(io.StringIO(built.tables[name].to_csv(index=False)))  # as the stage wrote it
            common = [c for c in written.columns if not c.endswith("_significant")]
            pd.testing.assert_frame_equal(as_csv[common], written[common], check_dtype=False, obj=f"{stage}/{name}")
    model = load_stage(reference, "cost").table("model")
    assert model.loc[model["attn"] == "se", "delta_params_total"].notna().all()


def test_a_folder_without_records_is_read_from_its_csvs(tmp_path: Path) -> None:
    reference = PROJECT_ROOT / "reports" / "cpu" / "raw"
    if not reference.is_dir():
        pytest.skip("no committed reports/cpu/raw")
    folder = tmp_path / "raw" / "memory"
    folder.mkdir(parents=True)
    shutil.copy(reference / "memory" / "memory.csv", folder / "memory.csv")
    data = load_stage(tmp_path / "raw", "memory")
    assert data.state == "ok" and not any("built from" in note for note in data.notes)
    pd.testing.assert_frame_equal(data.tables["memory"], pd.read_csv(folder / "memory.csv"))


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_scaling_figure_draws_only_axes_with_two_values(tmp_path: Path) -> None:
    """forward varies the batch, train has one shape: one panel, and the note names what has none."""
    from suite.report.figure_data import latency_scaling_data
    from suite.report.figures import latency_scaling_figure

    rows = [{"attn": name, "mode": "forward", "level": "module", "status": "ok", "batch": batch, "size": 28,
             "channels": 64, "median_ms": 0.1 * batch * (i + 1), "ref_median_ms": batch}
            for i, name in enumerate(TYPES) for batch in (2, 8)]
    rows += [{**row, "mode": "train", "batch": 2} for row in rows if row["batch"] == 2]
    one_mode = tmp_path / "one.png"
    data = latency_scaling_data(pd.DataFrame(rows))
    assert [(p.mode, p.axis) for p in data.panels] == [("forward", "batch")]
    path, note = latency_scaling_figure(data, one_mode, "caption")
    assert path == one_mode and "no panel where one value was measured: train vs batch (only 2)" in note
    both = tmp_path / "both.png"
    rows += [{**row, "mode": "train", "batch": 8} for row in rows if row["mode"] == "train"]
    data = latency_scaling_data(pd.DataFrame(rows))
    assert "no panel" not in latency_scaling_figure(data, both, "caption")[1]
    assert _png_size(both)[0] > 1.5 * _png_size(one_mode)[0]  # two panels side by side against one


def test_memory_figure_draws_the_step_peak_only_where_cuda_measured_it(tmp_path: Path) -> None:
    from suite.report.figure_data import memory_data
    from suite.report.figures import memory_figure

    rows = [{"attn": name, "mode": mode, "status": "ok", "device": "cpu", "batch": 2, "channels": 64, "size": 14,
             "act_saved_bytes": 2**20 * (i + 1), "step_peak_bytes": 2**23}
            for i, name in enumerate(TYPES) for mode in ("forward", "train")]
    cpu = tmp_path / "cpu.png"
    data = memory_data(pd.DataFrame(rows), pd.DataFrame())
    assert [p.label for p in data.panels] == ["saved for backward (train step), MiB"]
    path, note = memory_figure(data, cpu, "caption")
    assert path == cpu and "RSS growth is in memory.csv, not drawn" in note
    cuda = tmp_path / "cuda.png"
    on_gpu = [{**r, "device": "cuda:0", "cuda_step_peak_bytes": 2**21} for r in rows]
    data = memory_data(pd.DataFrame(on_gpu), pd.DataFrame())
    assert data.panels[1].rows["mib"].tolist() == [2.0] * len(on_gpu)
    path, note = memory_figure(data, cuda, "c")
    assert "not drawn" not in note and _png_size(cuda)[0] > 1.5 * _png_size(cpu)[0]


def test_the_stage_and_report_tables_share_column_names() -> None:
    """One vocabulary: the attention type is ``attn`` in every table, a record field that
    :data:`TABLE_COLUMNS` renames appears in none, and the report's latency table only selects
    the stage's columns (it renames nothing)."""
    from suite.timing.sweep import TABLE_COLUMNS

    folder = PROJECT_ROOT / "reports" / "cpu"
    if not (folder / "raw").is_dir():
        pytest.skip("no committed reports/cpu")
    pairs = [("latency.csv", "raw/latency/latency.csv"), ("memory.csv", "raw/memory/memory.csv"),
             ("cost.csv", "raw/cost/cost_module.csv"), ("accuracy.csv", "raw/accuracy/deltas.csv")]
    for report_csv, stage_csv in pairs:
        report, stage = (set(pd.read_csv(folder / name, nrows=1).columns) for name in (report_csv, stage_csv))
        assert "attn" in report and "attn" in stage, report_csv
        assert not set(TABLE_COLUMNS) & (report | stage), report_csv
    latency = [set(pd.read_csv(folder / name, nrows=1).columns) for name in ("latency.csv", "raw/latency/latency.csv")]
    assert latency[0] <= latency[1]
