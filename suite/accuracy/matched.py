"""Width-matched baselines: the backbone without attention, widened to a design's training cost.

The question an attention block answers in practice is whether the time it adds to a training
step would buy more accuracy as width. For a design ``d`` the arm ``matched_d`` is
``resnet_small`` without attention, its stem and stage widths scaled by a multiplier ``w``
(each rounded to a multiple of 8, :func:`scaled_widths`), with ``w`` chosen so that one
training step of it takes as long as one of ``d``'s network on this machine. It is trained
with the same seeds and recipe as the designs and compared with the same baseline, so the
report can set ``d`` beside ``matched_d``: attention against the same cost spent on width.

The search (:func:`search_width`) measures the training step of the design's network and of a
candidate width in one process, the steps interleaved (:func:`train_step_ms`: forward,
backward and SGD step on random data at the recipe's per-process batch and image size, in
channels-last where the recipe uses it and under the bf16 autocast the runs use, at the run's
thread count; medians over the rounds), and brackets ``w`` in ``[1, W_MAX]``: the ratio of
the candidate's step to the design's, measured at both ends, is interpolated in log-log space
(safeguarded to shrink the bracket) until it is within ``TOLERANCE`` of 1, or ``MAX_EVALS``
measurements were taken, or no width on the 8-channel grid lies between the bracket's ends
(then the closest width measured is kept, with status ``closest`` and why). A design is
refused, with the reason, when its step is not slower than the backbone's by more than the
tolerance (nothing to spend on width) or when even ``W_MAX`` is faster than it.

The result of each design is one row of ``matched.csv`` in the stage's output folder
(:data:`MATCHED_COLUMNS`: the widths, the three step times, MACs and parameters of the design's,
the backbone's and the matched network), reused by a later run of the same comparison: the
widths are part of a matched run's key, so a second search (whose timings differ) would leave
the runs already trained unpaired.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd

from suite.records import write_csv_atomic

from .identity import matched_design, matched_name

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .recipe import Recipe

__all__ = ["MATCHABLE_ARCHS", "W_MAX", "TOLERANCE", "MAX_EVALS", "MATCHED_FILE", "MATCHED_COLUMNS", "Widths",
           "widths_text", "parse_widths", "Measurement", "WidthSearch", "scaled_widths", "base_widths", "widened_network", "network_spec",
           "parse_network_spec", "build_matched", "search_width", "train_step_ms", "count_cost", "match_design",
           "read_matched", "write_matched"]

MATCHABLE_ARCHS = ("resnet_small",)
"""The backbones a matched arm can widen (their stem and stage widths are arguments)."""

W_MAX = 2.0
"""The widest multiplier tried: about 4x the backbone's convolution MACs."""

TOLERANCE = 0.03
"""How close the matched step time must come to the design's, as a fraction of it."""

MAX_EVALS = 8
"""The most candidate widths measured per design (the two ends of the bracket included)."""

ROUNDS = 12
"""Timed steps per network per measurement (medians over them)."""

WARMUP = 3
"""Untimed steps per network before a measurement."""

CHANNEL_STEP = 8
"""Widths are rounded to a multiple of this."""

MATCHED_FILE = "matched.csv"
"""The search's results, one row per design, in the accuracy stage's output folder."""

MATCHED_COLUMNS = ["design", "attn", "status", "reason", "width_mult", "widths", "design_step_ms",
                   "baseline_step_ms", "matched_step_ms", "step_ratio", "evaluations", "tolerance", "w_max",
                   "macs_design", "params_design", "macs_baseline", "params_baseline", "macs_matched",
                   "params_matched", "arch", "image_size", "batch", "device", "threads", "precision", "search_key"]
"""The columns of :data:`MATCHED_FILE`: ``attn`` is the arm's name (``matched_<design>``);
``widths`` the stem's then each stage's channels (``40-80-160-320``); step times in ms (medians,
interleaved); ``step_ratio`` matched / design; MACs per image (fvcore with the suite's handles,
one fused multiply-add = 1 MAC, batch 1 at ``image_size``); ``search_key`` what a re-run must
share to reuse the row."""

Widths = tuple[int, ...]
"""The stem's channels, then each stage's."""

SPEC_MARK = "@"
"""Separates a matched arm's name from its widths in the network spec :func:`build_matched` reads."""


class Measurement(NamedTuple):
    """One interleaved measurement: the design's and the candidate's training step, in ms."""

    design_ms: float
    candidate_ms: float

    @property
    def ratio(self) -> float:
        """The candidate's step over the design's."""
        return self.candidate_ms / self.design_ms


@dataclass
class WidthSearch:
    """How the search for one design ended.

    ``status``: ``ok`` (within the tolerance), ``closest`` (not within it; the closest width
    measured is kept, ``reason`` says why) or ``refused`` (no arm; ``reason`` says why).
    ``baseline_ms`` is the candidate's step at multiplier 1 (the backbone itself), measured
    beside the design's; ``design_ms`` and ``matched_ms`` come from the kept width's measurement."""

    status: str
    reason: str
    width_mult: float
    widths: Widths | None
    design_ms: float
    baseline_ms: float
    matched_ms: float
    evaluations: int
    tried: list[tuple[float, Widths, Measurement]] = field(default_factory=list)


def _round_channels(value: float) -> int:
    """``value`` rounded to the nearest multiple of :data:`CHANNEL_STEP` (halves up), at least one step."""
    return max(CHANNEL_STEP, CHANNEL_STEP * math.floor(value / CHANNEL_STEP + 0.5))


def scaled_widths(base: Widths, width_mult: float) -> Widths:
    """``base`` (stem, then stages) times ``width_mult``, each rounded to a multiple of 8."""
    return tuple(_round_channels(c * width_mult) for c in base)


def base_widths(arch: str) -> Widths:
    """The stem and stage widths of ``arch`` as :func:`modules.build_model` builds it (read from
    the network, so they follow its defaults); a backbone not in :data:`MATCHABLE_ARCHS` is a
    ValueError."""
    if arch not in MATCHABLE_ARCHS:
        raise ValueError(f"a matched arm widens {', '.join(MATCHABLE_ARCHS)} only, not {arch!r}")
    from modules.small_resnet import small_resnet

    net = small_resnet(num_classes=1)
    return (int(net.conv1.out_channels), *(int(stage[-1].bn2.num_features) for stage in net.stages()))


def widened_network(widths: Widths, num_classes: int) -> nn.Module:
    """``resnet_small`` without attention at ``widths`` (stem, then stages)."""
    from modules.small_resnet import small_resnet

    return small_resnet(num_classes=num_classes, stem_width=widths[0], widths=tuple(widths[1:]))


def widths_text(widths: Widths) -> str:
    """Widths as the keys, records and :data:`MATCHED_FILE` write them: ``40-80-160-320``."""
    return "-".join(map(str, widths))


def parse_widths(text: str) -> Widths:
    """The widths of a :func:`widths_text`; a ValueError for anything else."""
    widths = tuple(int(part) for part in str(text).split("-"))
    if not all(w > 0 for w in widths):
        raise ValueError(f"widths must be positive channel counts, got {text!r}")
    return widths


def network_spec(design: str, widths: Widths) -> str:
    """What :func:`suite.accuracy.train.build_network` takes for the arm matched to ``design``
    at ``widths``: ``matched_se@40-80-160-320``."""
    return f"{matched_name(design)}{SPEC_MARK}{widths_text(widths)}"


def parse_network_spec(spec: str) -> tuple[str, Widths] | None:
    """The design and widths of a :func:`network_spec`; None for any other name."""
    name, mark, text = str(spec).partition(SPEC_MARK)
    design = matched_design(name)
    if not mark or design is None:
        return None
    try:
        return design, parse_widths(text)
    except ValueError:
        return None


def build_matched(arch: str, spec: str, num_classes: int) -> nn.Module:
    """The network of a :func:`network_spec` in ``arch``; a ValueError for a backbone that
    cannot be widened or a spec whose widths do not fit it."""
    parsed = parse_network_spec(spec)
    if parsed is None:
        raise ValueError(f"not a matched network spec: {spec!r} (expected e.g. {network_spec('se', (40, 80, 160, 320))})")
    base = base_widths(arch)
    if len(parsed[1]) != len(base):
        raise ValueError(f"{spec!r}: {arch} takes {len(base)} widths (stem, then stages), got {len(parsed[1])}")
    return widened_network(parsed[1], num_classes)


# --------------------------------------------------------------------------- the search
Measure = Callable[[Widths], Measurement]
"""Measures the design's step and a candidate's at the given widths (interleaved)."""


def search_width(measure: Measure, base: Widths, *, tolerance: float = TOLERANCE, w_max: float = W_MAX,
                 max_evals: int = MAX_EVALS) -> WidthSearch:
    """The multiplier of ``base`` whose training step matches the design's (module docstring).

    ``measure`` is called once per distinct set of widths (at most ``max_evals`` times, at least
    2): first at multiplier 1, which refuses a design not slower than the backbone by more than
    ``tolerance``, then at ``w_max``, which refuses one slower than even that width."""
    if max_evals < 2:
        raise ValueError(f"max_evals must be >= 2 (the two ends of the bracket), got {max_evals}")
    if not w_max > 1:
        raise ValueError(f"w_max must be > 1, got {w_max}")
    tried: list[tuple[float, Widths, Measurement]] = []

    def probe(w: float) -> Measurement:
        widths = scaled_widths(base, w)
        done = next((m for _, ws, m in tried if ws == widths), None)
        if done is None:
            done = measure(widths)
            tried.append((w, widths, done))
        return done

    first = probe(1.0)
    if first.design_ms <= first.candidate_ms * (1 + tolerance):
        return _refused(f"costs no more than the backbone: its training step took {first.design_ms:.3g} ms "
                        f"against the backbone's {first.candidate_ms:.3g} ms (within {tolerance:.0%}); nothing "
                        f"to spend on width", first, tried)
    widest = probe(w_max)
    if widest.ratio < 1 - tolerance:
        return _refused(f"costs more than even the backbone at width x{w_max:g} "
                        f"({widths_text(scaled_widths(base, w_max))} channels): its training step took "
                        f"{widest.design_ms:.3g} ms against that width's {widest.candidate_ms:.3g} ms; matching it "
                        f"needs a multiplier above W_MAX = {w_max:g}", first, tried)
    lo, hi = (1.0, first), (w_max, widest)
    while abs(hi[1].ratio - 1) > tolerance and len(tried) < max_evals:
        w = _next_width(lo, hi, base)
        if w is None:
            break
        m = probe(w)
        if abs(m.ratio - 1) <= tolerance:
            break
        lo, hi = ((w, m), hi) if m.ratio < 1 else (lo, (w, m))
    return _kept(tried, first, tolerance, max_evals, base)


def _next_width(lo: tuple[float, Measurement], hi: tuple[float, Measurement], base: Widths) -> float | None:
    """The next multiplier inside the bracket: where log(ratio) crosses 0 on the line through the
    ends in log(w), kept within the bracket's middle 70% so it shrinks; the midpoint when that
    width rounds onto an end's; None when no width on the grid lies between the ends."""
    (a, ma), (b, mb) = lo, hi
    ra, rb = math.log(ma.ratio), math.log(mb.ratio)
    t = min(max(-ra / (rb - ra) if rb != ra else 0.5, 0.15), 0.85)
    ends = {scaled_widths(base, a), scaled_widths(base, b)}
    for w in (math.exp(math.log(a) + t * (math.log(b) - math.log(a))), (a + b) / 2):
        w = round(w, 4)
        if scaled_widths(base, w) not in ends:
            return w
    return None


def _refused(reason: str, first: Measurement, tried: list[tuple[float, Widths, Measurement]]) -> WidthSearch:
    return WidthSearch("refused", reason, math.nan, None, first.design_ms, first.candidate_ms, math.nan, len(tried),
                       tried)


def _kept(tried: list[tuple[float, Widths, Measurement]], first: Measurement, tolerance: float, max_evals: int,
          base: Widths) -> WidthSearch:
    """The measured width closest to the design's step (in log ratio): ``ok`` within the
    tolerance, else ``closest`` with why the search stopped."""
    w, widths, m = min(tried[1:], key=lambda entry: abs(math.log(entry[2].ratio)))
    if abs(m.ratio - 1) <= tolerance:
        status, reason = "ok", ""
    else:
        why = (f"{max_evals} widths measured" if len(tried) >= max_evals
               else "no width on the 8-channel grid lies between the two closest")
        status, reason = "closest", (f"not within {tolerance:.0%} ({why}): kept the closest, x{w:g} at "
                                     f"{m.ratio - 1:+.1%} of the design's step")
    return WidthSearch(status, reason, w, widths, m.design_ms, first.candidate_ms, m.candidate_ms, len(tried), tried)


# --------------------------------------------------------------------------- measuring
def _step(net: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          autocast: Callable[[], Any]) -> None:
    """One training step: forward under ``autocast()``, cross-entropy, backward, SGD step."""
    import torch

    with autocast():
        loss = torch.nn.functional.cross_entropy(net(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def train_step_ms(nets: Sequence[nn.Module], recipe: Recipe, device: torch.device, batch: int, num_classes: int,
                  *, rounds: int = ROUNDS, warmup: int = WARMUP) -> list[float]:
    """The median time of one training step of each of ``nets``, in ms, on random images of the
    recipe's size (channels-last where the recipe uses it) at ``batch`` per step, under the
    runs' autocast (:func:`suite.accuracy.train.amp_active`), with SGD as the runs use it. The
    networks' steps alternate within each round, their order reversed every other round, so
    drifting machine load falls on all of them alike."""
    import torch

    from .train import _autocast

    x = torch.randn(batch, 3, recipe.image_size, recipe.image_size, device=device)
    if recipe.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch,), device=device)
    steps = []
    for net in nets:
        net = net.to(device, memory_format=torch.channels_last if recipe.channels_last else torch.contiguous_format)
        net.train()
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=recipe.momentum, nesterov=True,
                                    weight_decay=recipe.weight_decay)
        steps.append(lambda net=net, optimizer=optimizer: _step(net, optimizer, x, y,
                                                                lambda: _autocast(recipe, device)))
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for step in steps:
            step()
    times: list[list[float]] = [[] for _ in steps]
    for r in range(rounds):
        order = range(len(steps)) if r % 2 == 0 else reversed(range(len(steps)))
        for i in order:
            sync()
            start = time.perf_counter()
            steps[i]()
            sync()
            times[i].append(1e3 * (time.perf_counter() - start))
    return [statistics.median(t) for t in times]


def count_cost(net: nn.Module, image_size: int) -> tuple[float, int]:
    """MACs per image (fvcore with the suite's handles, :mod:`suite.cost.fvcore_handles`, on one
    ``image_size`` image; NaN where counting fails) and parameters of ``net``."""
    import torch

    params = sum(p.numel() for p in net.parameters())
    try:
        with warnings.catch_warnings():  # fvcore's import and trace warn about their own code
            warnings.simplefilter("ignore")
            from suite.cost.fvcore_handles import AttnbenchFlopCountAnalysis

            probe = net.to("cpu", memory_format=torch.contiguous_format).eval()
            macs = float(AttnbenchFlopCountAnalysis(probe, (torch.randn(1, 3, image_size, image_size),)).totals()[0])
    except Exception:  # noqa: BLE001 - a count the counters cannot make leaves the cell empty
        macs = math.nan
    return macs, params


def match_design(design: str, *, arch: str, recipe: Recipe, device: torch.device, batch: int, num_classes: int,
                 step_ms: Callable[..., list[float]] | None = None) -> dict[str, Any]:
    """Search the width matched to ``design`` (:func:`search_width`, timed by ``step_ms``,
    :func:`train_step_ms` by default) and count the three networks: a row of
    :data:`MATCHED_COLUMNS` without the run's context columns (``device``, ``threads``,
    ``precision``, ``search_key``). The global random state is left as it was."""
    import torch

    from .train import build_network

    time_steps = step_ms or train_step_ms
    base = base_widths(arch)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        design_net = build_network(arch, design, num_classes)

        def measure(widths: Widths) -> Measurement:
            candidate = widened_network(widths, num_classes)
            design_step, candidate_step = time_steps([design_net, candidate], recipe, device, batch, num_classes)
            return Measurement(design_step, candidate_step)

        search = search_width(measure, base)
        costs = {"design": count_cost(design_net, recipe.image_size),
                 "baseline": count_cost(widened_network(base, num_classes), recipe.image_size)}
        if search.widths is not None:
            costs["matched"] = count_cost(widened_network(search.widths, num_classes), recipe.image_size)
    row = {"design": design, "attn": matched_name(design), "status": search.status, "reason": search.reason,
           "width_mult": search.width_mult, "widths": widths_text(search.widths) if search.widths else "",
           "design_step_ms": search.design_ms, "baseline_step_ms": search.baseline_ms,
           "matched_step_ms": search.matched_ms, "step_ratio": search.matched_ms / search.design_ms,
           "evaluations": search.evaluations, "tolerance": TOLERANCE, "w_max": W_MAX, "arch": arch,
           "image_size": recipe.image_size, "batch": batch}
    for which in ("design", "baseline", "matched"):
        row[f"macs_{which}"], row[f"params_{which}"] = costs.get(which, (math.nan, math.nan))
    return row


# --------------------------------------------------------------------------- matched.csv
def read_matched(folder: Path) -> dict[str, dict[str, Any]]:
    """The rows of ``folder``'s :data:`MATCHED_FILE` by design (none without the file)."""
    path = Path(folder) / MATCHED_FILE
    if not path.is_file() or path.stat().st_size == 0:
        return {}
    frame = pd.read_csv(path, dtype={"widths": str, "reason": str, "search_key": str}, keep_default_na=False,
                        na_values=[""])
    return {str(row["design"]): row for row in frame.to_dict("records")}


def write_matched(folder: Path, rows: dict[str, dict[str, Any]]) -> None:
    """Write ``rows`` (by design, in that order) to ``folder``'s :data:`MATCHED_FILE` atomically."""
    frame = pd.DataFrame(list(rows.values()))
    frame = frame.reindex(columns=[*MATCHED_COLUMNS, *(c for c in frame.columns if c not in MATCHED_COLUMNS)])
    write_csv_atomic(Path(folder) / MATCHED_FILE, frame)
