"""Width-matched baselines (suite.accuracy.matched): the width search against injected step
timers (nothing here is timed), the networks it builds, and the arm in the accuracy sweep."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from accuracy_fixtures import image_folder

import suite.accuracy.matched as matched
from suite.__main__ import main as suite_main
from suite.accuracy.matched import (
    MATCHED_FILE,
    Measurement,
    base_widths,
    build_matched,
    match_design,
    network_spec,
    parse_network_spec,
    scaled_widths,
    search_width,
)
from suite.accuracy.recipe import PROFILES
from suite.accuracy.train import build_network
from suite.records import RecordStore

BASE = (32, 64, 128, 256)


class Timer:
    """A fake interleaved measurement: the design takes ``design_ms``, a candidate ``cost(widths)``;
    it counts its calls."""

    def __init__(self, design_ms: float, cost) -> None:
        self.design_ms, self.cost, self.calls = design_ms, cost, []

    def __call__(self, widths: tuple[int, ...]) -> Measurement:
        self.calls.append(widths)
        return Measurement(self.design_ms, self.cost(widths))


def quadratic(widths: tuple[int, ...]) -> float:
    """A step that grows with the square of the width, 5 ms for the backbone."""
    return 5.0 * (widths[-1] / 256) ** 2


def test_widths_are_scaled_and_rounded_to_multiples_of_8() -> None:
    assert base_widths("resnet_small") == BASE
    assert scaled_widths(BASE, 1.0) == BASE
    assert scaled_widths(BASE, 1.3) == (40, 80, 168, 336)  # 41.6, 83.2, 166.4, 332.8
    assert scaled_widths((12, 4), 1.0) == (16, 8)  # halves round up, never below one step of 8
    assert all(w % 8 == 0 for k in range(20) for w in scaled_widths(BASE, 1 + k / 19))


def test_a_monotone_timer_is_matched_within_the_tolerance() -> None:
    timer = Timer(10.0, quadratic)  # the match is near x1.414
    result = search_width(timer, BASE, tolerance=0.03, max_evals=8)
    assert result.status == "ok" and result.reason == ""
    assert abs(result.matched_ms / result.design_ms - 1) <= 0.03
    assert result.widths == scaled_widths(BASE, result.width_mult) and 1.3 < result.width_mult < 1.5
    assert all(w % 8 == 0 for w in result.widths)
    assert result.baseline_ms == 5.0 and result.evaluations == len(timer.calls) <= 8
    assert timer.calls[:2] == [BASE, scaled_widths(BASE, 2.0)]  # the bracket's ends first
    assert len(set(timer.calls)) == len(timer.calls)  # no width measured twice


def test_the_search_stops_at_its_evaluation_limit_and_keeps_the_closest() -> None:
    timer = Timer(10.0, lambda w: 8.0 if w[-1] < 344 else 12.0)  # a jump: never within 3%
    result = search_width(timer, BASE, max_evals=4)
    assert len(timer.calls) == result.evaluations == 4
    assert result.status == "closest" and "4 widths measured" in result.reason
    assert result.matched_ms in (8.0, 12.0) and result.widths is not None
    noisy = np.random.default_rng(0)
    timer = Timer(10.0, lambda w: quadratic(w) * noisy.uniform(0.5, 1.5))
    assert search_width(timer, BASE, max_evals=6).evaluations == len(timer.calls) <= 6


def test_the_search_stops_when_the_grid_has_no_width_between_its_ends() -> None:
    timer = Timer(10.0, lambda w: 8.0 if w[-1] < 344 else 12.0)
    result = search_width(timer, BASE, max_evals=50)
    assert result.status == "closest" and "8-channel grid" in result.reason
    assert len(timer.calls) < 50


def test_a_design_no_slower_than_the_backbone_is_refused_with_the_reason() -> None:
    timer = Timer(5.1, quadratic)  # 2% over the backbone's 5 ms
    result = search_width(timer, BASE, tolerance=0.03)
    assert result.status == "refused" and result.widths is None and math.isnan(result.width_mult)
    assert "costs no more than the backbone" in result.reason and "nothing to spend on width" in result.reason
    assert timer.calls == [BASE]


def test_a_design_slower_than_the_widest_width_is_refused_with_the_reason() -> None:
    timer = Timer(30.0, quadratic)  # x2 takes 20 ms
    result = search_width(timer, BASE, w_max=2.0)
    assert result.status == "refused" and "W_MAX = 2" in result.reason and "64-128-256-512" in result.reason
    assert len(timer.calls) == 2


def test_the_search_refuses_a_bracket_it_cannot_search() -> None:
    with pytest.raises(ValueError, match="max_evals"):
        search_width(Timer(10.0, quadratic), BASE, max_evals=1)
    with pytest.raises(ValueError, match="w_max"):
        search_width(Timer(10.0, quadratic), BASE, w_max=1.0)


def test_build_network_builds_the_backbone_at_a_spec_s_widths() -> None:
    spec = network_spec("gsop", (40, 80, 160, 320))
    assert spec == "matched_gsop@40-80-160-320" and parse_network_spec(spec) == ("gsop", (40, 80, 160, 320))
    assert parse_network_spec("se") is None and parse_network_spec("matched_se@x") is None
    net = build_network("resnet_small", spec, 10)
    assert net.conv1.out_channels == 40 and [s[-1].bn2.num_features for s in net.stages()] == [80, 160, 320]
    assert not any("attn" in type(m).__name__.lower() for m in net.modules())
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="resnet_small only"):
        build_matched("resnet18", spec, 10)
    with pytest.raises(ValueError, match="takes 4 widths"):
        build_matched("resnet_small", "matched_se@40-80", 10)


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def params_timer(nets, recipe, device, batch, num_classes) -> list[float]:
    """A fake :func:`~suite.accuracy.matched.train_step_ms`: a step takes 1 ms per 100k parameters."""
    return [_params(net) / 1e5 for net in nets]


def test_match_design_counts_the_three_networks() -> None:
    row = match_design("gsop", arch="resnet_small", recipe=PROFILES["smoke"], device=torch.device("cpu"), batch=16,
                       num_classes=10, step_ms=params_timer)
    assert row["status"] == "ok" and row["attn"] == "matched_gsop"
    assert abs(row["step_ratio"] - 1) <= 0.03
    widths = tuple(int(w) for w in row["widths"].split("-"))
    assert row["params_matched"] == _params(build_network("resnet_small", network_spec("gsop", widths), 10))
    assert row["params_design"] == _params(build_network("resnet_small", "gsop", 10))
    assert row["params_baseline"] == _params(build_network("resnet_small", None, 10))
    assert row["macs_matched"] > row["macs_baseline"] > 0 and row["macs_design"] > row["macs_baseline"]
    refused = match_design("se", arch="resnet_small", recipe=PROFILES["smoke"], device=torch.device("cpu"),
                           batch=16, num_classes=10, step_ms=params_timer)
    assert refused["status"] == "refused" and refused["widths"] == "" and math.isnan(refused["macs_matched"])


# --------------------------------------------------------------------------- the CLI and the sweep
def test_matched_names_are_checked_before_any_work(capsys) -> None:
    assert suite_main(["accuracy", "--attn", "se", "--matched", "eca", "--data", "/nonexistent"]) == 2
    assert "eca not among this run's designs" in capsys.readouterr().err
    assert suite_main(["accuracy", "--attn", "se", "--matched", "zz", "--data", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "unknown design(s) zz" in err and "accepted: the designs of --attn (se)" in err
    assert suite_main(["accuracy", "--preset", "gpu", "--attn", "se", "--matched", "se", "--device", "cpu"]) == 2
    assert "widens resnet_small only" in capsys.readouterr().err
    assert suite_main(["accuracy", "--attn", "se", "--matched", "se", "--shard", "1/2", "--data", "/nonexistent"]) == 2
    assert "--matched with --shard" in capsys.readouterr().err


def test_a_matched_arm_is_trained_paired_and_its_width_reused(tmp_path, one_thread, monkeypatch, capsys) -> None:
    data, out = image_folder(tmp_path / "mini", classes=2), tmp_path / "out"
    monkeypatch.setattr(matched, "train_step_ms", params_timer)
    argv = ["accuracy", "--preset", "smoke", "--attn", "se,gsop", "--matched", "se,gsop", "--seeds", "1",
            "--data", str(data), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--threads", "1",
            "--no-progress"]
    assert suite_main(argv) == 0
    table = pd.read_csv(out / MATCHED_FILE, dtype={"widths": str}).set_index("design")
    assert table.loc["se", "status"] == "refused" and "nothing to spend on width" in table.loc["se", "reason"]
    assert table.loc["gsop", "status"] == "ok" and table.loc["gsop", "params_matched"] > 0
    widths = table.loc["gsop", "widths"]
    records = RecordStore(out / "runs.jsonl").read()
    assert [(r["attn"], r["status"]) for r in records] == [
        ("none", "ok"), ("se", "ok"), ("gsop", "ok"), ("matched_gsop", "ok")]
    arm = records[-1]
    assert arm["matches"] == "gsop" and arm["widths"] == widths and arm["key"].endswith(f"|widths={widths}")
    assert arm["params"] == table.loc["gsop", "params_matched"]
    deltas = pd.read_csv(out / "deltas.csv").set_index("attn")
    assert deltas.loc["matched_gsop", "top1_pairs"] == 1  # paired with the baseline's seed

    def no_timing(*args, **kwargs):
        raise AssertionError("the width was searched again")

    monkeypatch.setattr(matched, "train_step_ms", no_timing)
    capsys.readouterr()
    assert suite_main(argv) == 0
    text = capsys.readouterr().out
    assert "reusing its width from matched.csv" in text and "4 already done, 0 to do" in text


def test_the_step_timer_trains_each_network_and_returns_a_median_per_network() -> None:
    nets = [build_network("resnet_small", None, 10), build_network("resnet_small", network_spec("se", (8, 8, 8, 8)), 10)]
    before = [net.fc.weight.detach().clone() for net in nets]
    times = matched.train_step_ms(nets, PROFILES["smoke"], torch.device("cpu"), 2, 10, rounds=2, warmup=1)
    assert len(times) == 2 and all(t > 0 for t in times)
    assert all(not torch.equal(b, net.fc.weight) for b, net in zip(before, nets, strict=True))  # SGD stepped
