"""The accuracy sweep: the distributed job, the data, the plan of runs and the loop over it.

One process, or every rank of a ``torchrun`` job, runs :func:`run_sweep`: it joins the job
(:func:`suite.accuracy.train.init_distributed`), decodes the splits, keeps the designs the
backbone can hold, plans one :class:`TrainingRun` per seed and design (the baseline first) and
trains those the records do not hold yet (:func:`suite.stage.pending`). With width-matched arms
(``--matched``) it first finds each one's widths (:mod:`suite.accuracy.matched`, on the first
rank, or reused from ``matched.csv``) and plans its runs after the designs'. The first rank holds
the output folder's lock, writes the records, the per-image results, the val manifest and
``gate_scale.csv``, and rewrites the tables (:mod:`suite.accuracy.tables`) at the end; every
rank takes part in every run.

A run that raises is a record of status ``error`` and the sweep goes on, in one process. In a
job of several processes the others would wait for the failed one in their next collective, so
the failed rank leaves at once (:class:`RankFailed`: its rank and message on stderr, exit
status 1) and ``torchrun`` stops the rest; the bench (:mod:`suite.bench.runner`) records that
message as the stage's error and ends the bench on that rank.

Every rank joins the job at :func:`run_sweep`'s start and waits there for the others at most
``--dist-timeout`` minutes: the ranks must reach it together. The bench under ``torchrun``
therefore runs this stage first on every rank, before the first rank alone measures the other
stages.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from suite.env import collect_environment
from suite.errors import UsageError
from suite.portable import format_traceback, shown_path
from suite.records import (
    RecordStore,
    environment_columns,
    folder_lock,
    write_csv_atomic,
    write_text_atomic,
)
from suite.shard import select_shard
from suite.stage import failure_fields, pending
from suite.stages import stage

from .data import DataNotFoundError, SplitData, list_classes, load_split, select_classes
from .identity import (
    design_code_version,
    matched_design,
    matched_name,
    per_image_line,
    run_context,
    run_identity,
    val_manifest_name,
)
from .matched import (
    MAX_EVALS,
    TOLERANCE,
    W_MAX,
    Widths,
    match_design,
    network_spec,
    parse_widths,
    read_matched,
    widths_text,
    write_matched,
)
from .recipe import DEFAULT_SEEDS, Recipe
from .tables import write_tables
from .train import (
    BASELINE,
    DistInfo,
    amp_active,
    broadcast_object,
    close_distributed,
    gate_scale_at_init,
    init_distributed,
    train_run,
)

if TYPE_CHECKING:
    from tqdm import tqdm

    from .cli import AccuracySettings

__all__ = ["TrainingRun", "SweepSummary", "RankFailed", "training_device", "run_sweep"]


@dataclass(frozen=True)
class TrainingRun:
    """One training run of the sweep (a configuration of :mod:`suite.stage`): a design and a
    seed, in a ``context`` that names everything two runs must share to be paired (the arch,
    data, recipe, precision, threads, processes and training code;
    :func:`suite.accuracy.identity.run_context`)."""

    attn: str
    seed: int
    context: str
    widths: Widths | None = None
    """A width-matched arm's widths (stem, then stages); None for a design or the baseline."""

    def key(self) -> str:
        """Its record's key: the run, its context and the design's own code version, and a
        width-matched arm's widths."""
        key = f"{self.attn}|seed={self.seed}|{self.context}|design={design_code_version(self.attn)}"
        return key + (f"|widths={widths_text(self.widths)}" if self.widths else "")

    def as_row(self) -> dict[str, Any]:
        """The design and the seed; for a width-matched arm also the design it matches and its widths."""
        row: dict[str, Any] = {"attn": self.attn, "seed": self.seed}
        if self.widths:
            row.update(matches=matched_design(self.attn), widths=widths_text(self.widths))
        return row

    def network(self) -> str:
        """What :func:`suite.accuracy.train.build_network` builds for it: the design, or a matched
        arm's network spec (:func:`suite.accuracy.matched.network_spec`)."""
        design = matched_design(self.attn)
        return network_spec(design, self.widths) if self.widths and design else self.attn

    def label(self) -> str:
        """A few words for the progress bar."""
        return f"{self.attn} seed {self.seed}"


@dataclass(frozen=True)
class SweepSummary:
    """How a sweep ended: its planned runs, how many of them have a finished (``ok``) record
    (``None`` on the ranks after the first, which hold no records) and the records file."""

    runs: int
    finished: int | None
    records: Path


@dataclass
class Sweep:
    """What every run of one sweep shares: the settings and recipe, this process's place in
    the job, the output folder and data, the comparison's identity, the environment (first rank
    only) and the two record stores."""

    settings: AccuracySettings
    recipe: Recipe
    info: DistInfo
    out: Path
    root: Path
    train: SplitData
    val: SplitData
    identity: dict[str, Any]
    environment: dict[str, Any]
    runs: RecordStore
    per_image: RecordStore

    def say(self, text: str) -> None:
        """Print ``text`` on the first rank only."""
        _say(self.info, text)

    def bar(self, total: int | None, desc: str, unit: str) -> tqdm | None:
        """A progress bar on the first rank, unless ``--no-progress``."""
        return _bar(self.info, self.settings.no_progress, total, desc, unit)


def _say(info: DistInfo, text: str) -> None:
    """Print ``text`` on the first rank only."""
    if info.is_main:
        print(text, flush=True)


def _bar(info: DistInfo, no_progress: bool, total: int | None, desc: str, unit: str) -> tqdm | None:
    """A progress bar on the first rank, unless ``no_progress``."""
    if not info.is_main or no_progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=1.0, leave=False)


class RankFailed(SystemExit):
    """A run raised on one rank of a job of several processes: this rank ends with exit status 1
    and ``rank R: <message>`` (``torchrun`` then stops the other ranks, which would otherwise
    wait for this one in a collective until the job's timeout)."""

    def __init__(self, rank: int, message: str) -> None:
        super().__init__(f"rank {rank}: {message}")
        self.rank = rank


GPU_PRESET = "gpu"
"""The preset that trains on CUDA unless ``--device`` says otherwise."""


def training_device(settings: AccuracySettings) -> str:
    """The device the sweep trains on: ``--device``, else ``cuda`` for the gpu preset and
    ``cpu`` for the others (``auto``: CUDA when available, else the CPU). CUDA asked for, by
    ``--device cuda`` or by the gpu preset, where it cannot be used (not available, or fewer
    GPUs than this ``torchrun`` process's ``LOCAL_RANK`` needs) is a :class:`UsageError` naming
    what to pass instead; the command checks it before any data is found or decoded."""
    import torch

    device = settings.device or ("cuda" if settings.preset == GPU_PRESET else "cpu")
    if device != "cuda":
        return device
    asked = "--device cuda" if settings.device else f"--preset {settings.preset} (it trains on CUDA)"
    if not torch.cuda.is_available():
        raise UsageError(
            f"{asked} needs CUDA, and CUDA is not usable here (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}): run on a machine with a GPU, pass "
            f"--device cpu to train on the CPU anyway (the gpu preset's 224 px runs take hours each there), "
            f"or choose --preset cpu or --preset smoke")
    local, count = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    if local >= count:
        raise UsageError(f"{asked}: this process has LOCAL_RANK {local} but CUDA sees {count} GPU(s); start at "
                         f"most {count} processes per machine (torchrun --nproc_per_node {count})")
    return device


def run_sweep(settings: AccuracySettings, recipe: Recipe, attns: list[str], root: Path, out: Path,
              matched: Sequence[str] = ()) -> SweepSummary:
    """Join the job (on :func:`training_device`, its collectives waiting up to
    ``--dist-timeout`` minutes for the other ranks), set the threads, and run the sweep of
    ``attns`` (and the baseline, and a width-matched arm of each design in ``matched``) over the
    seeds into ``out``, the first rank holding its lock; the job is left cleanly when the sweep
    ends, and without waiting for the other ranks when it raised."""
    from datetime import timedelta

    info = init_distributed(training_device(settings), timeout=timedelta(minutes=settings.dist_timeout))
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    if info.device.type == "cpu":
        torch.set_flush_denormal(True)  # denormal weights late in training can slow CPU kernels many-fold
    first = settings.first_seed
    seeds = list(range(first, first + (settings.seeds or DEFAULT_SEEDS[settings.preset])))
    finished = False
    try:
        with folder_lock(out) if info.is_main else contextlib.nullcontext():
            summary = _sweep(settings, recipe, attns, root, seeds, out, info, matched)
        finished = True
        return summary
    finally:
        close_distributed(finished)


def _sweep(settings: AccuracySettings, recipe: Recipe, attns: list[str], root: Path, seeds: list[int], out: Path,
           info: DistInfo, matched: Sequence[str] = ()) -> SweepSummary:
    """Load the data, find the matched arms' widths, plan the runs, train those still to do and
    rewrite the tables."""
    import torch

    train, val = _load_data(settings, recipe, root, info)
    attns = _placeable(attns, recipe.arch, len(train.classes), settings.attn, info)
    identity = run_identity(recipe.fingerprint(), train.identity, val.identity, amp_active(recipe, info.device),
                            torch.get_num_threads(), info.world_size)
    sweep = Sweep(settings, recipe, info, out, root, train, val, identity,
                  environment_columns(collect_environment()) if info.is_main else {}, RecordStore(out / str(stage("accuracy").records_file)),
                  RecordStore(out / "per_image.jsonl"))
    arms = _matched_arms(sweep, [d for d in matched if d in attns])
    plan = select_shard(_plan(sweep, attns, seeds, arms), settings.shard)
    if info.is_main:
        _write_val_manifest(out, val)
        scales = [{"attn": a, "gate_scale_at_init": _gate_scale(a, recipe.arch, len(train.classes), recipe.image_size)}
                  for a in attns]
        write_csv_atomic(out / "gate_scale.csv", pd.DataFrame(scales, columns=["attn", "gate_scale_at_init"]))
    _train_pending(sweep, plan)
    if not info.is_main:
        return SweepSummary(len(plan), None, sweep.runs.path)
    sweep.say(write_tables(sweep.runs, out, identity))
    latest = {r["key"]: r for r in sweep.runs.latest_by_key()}
    finished = sum(latest.get(run.key(), {}).get("status") == "ok" for run in plan)
    return SweepSummary(len(plan), finished, sweep.runs.path)


def _plan(sweep: Sweep, attns: list[str], seeds: list[int], arms: dict[str, Widths] | None = None
          ) -> list[TrainingRun]:
    """One run per seed and design, the baseline first and the width-matched ``arms`` (design ->
    widths) last, in the context of everything that must match for two runs to be paired
    (:mod:`suite.accuracy.identity`)."""
    context = run_context(sweep.recipe.arch, sweep.root.name, sweep.identity)
    return [run for seed in seeds for run in (
        *(TrainingRun(attn, seed, context) for attn in [BASELINE, *attns]),
        *(TrainingRun(matched_name(design), seed, context, widths) for design, widths in (arms or {}).items()))]


def _matched_arms(sweep: Sweep, designs: list[str]) -> dict[str, Widths]:
    """The widths of each design's matched arm (design -> widths; a refused design has none):
    its row of ``matched.csv`` when the row was found in this comparison's context, else a new
    search (:func:`suite.accuracy.matched.match_design`) on the first rank, whose rows every rank
    then receives; ``matched.csv`` rewritten with them."""
    rows = _search_or_reuse(sweep, designs) if sweep.info.is_main and designs else {}
    rows = broadcast_object(rows, sweep.info)
    return {design: parse_widths(row["widths"]) for design, row in rows.items() if row["status"] != "refused"}


def _search_key(sweep: Sweep, design: str, batch: int) -> str:
    """What a row of ``matched.csv`` must share with this sweep to be reused: the runs' context,
    the design's code, the device, the per-process batch and the search's settings."""
    context = run_context(sweep.recipe.arch, sweep.root.name, sweep.identity)
    return (f"{context}|design={design_code_version(design)}|device={sweep.info.device.type}|batch={batch}|"
            f"tol={TOLERANCE}|wmax={W_MAX}|evals={MAX_EVALS}")


def _search_or_reuse(sweep: Sweep, designs: list[str]) -> dict[str, dict[str, Any]]:
    """On the first rank: each design's row of ``matched.csv`` (reused, or searched and written),
    with a line per design."""
    batch = sweep.recipe.batch_size // sweep.info.world_size
    known = read_matched(sweep.out)
    rows: dict[str, dict[str, Any]] = {}
    for design in designs:
        key = _search_key(sweep, design, batch)
        row = known.get(design)
        if row is None or row.get("search_key") != key:
            sweep.say(f"matched {design}: measuring training steps for the width whose step matches {design}'s "
                      f"(up to {MAX_EVALS} widths)")
            row = {**match_design(design, arch=sweep.recipe.arch, recipe=sweep.recipe, device=sweep.info.device,
                                  batch=batch, num_classes=len(sweep.train.classes)),
                   "device": str(sweep.info.device), "threads": sweep.identity["threads"],
                   "precision": sweep.identity["precision"], "search_key": key}
            known[design] = rows[design] = row
            write_matched(sweep.out, known)
        else:
            rows[design] = row
            sweep.say(f"matched {design}: reusing its width from matched.csv")
        sweep.say(_matched_line(row))
    return rows


def _matched_line(row: dict[str, Any]) -> str:
    """A matched arm's search result in one line."""
    head = f"{row['attn']:>14s}: "
    if row["status"] == "refused":
        return head + f"refused: {row['reason']}"
    text = (f"width x{row['width_mult']:.3g} ({row['widths']} channels), step {row['matched_step_ms']:.3g} ms "
            f"against {row['design']}'s {row['design_step_ms']:.3g} ms and the backbone's {row['baseline_step_ms']:.3g} ms")
    return head + text + (f"; {row['reason']}" if row["status"] != "ok" else "")


def _train_pending(sweep: Sweep, plan: list[TrainingRun]) -> None:
    """Train the runs of ``plan`` without a final record (decided by the first rank, which holds
    the records; a diverged run is a result), with a progress bar over all their steps."""
    info, recipe = sweep.info, sweep.recipe
    todo = pending(plan, sweep.runs, retry_failed=True)[0] if info.is_main else []
    todo = broadcast_object(todo, info)
    sweep.say(f"accuracy: profile {recipe.profile}, {recipe.arch} at {recipe.image_size} px, "
              f"{len(sweep.train)} train / {len(sweep.val)} val images, {len(sweep.train.classes)} classes, "
              f"{info.world_size} process(es) on {info.device}; {len(plan)} runs, "
              f"{len(plan) - len(todo)} already done, {len(todo)} to do -> {sweep.out}")
    steps = len(sweep.train) // recipe.batch_size
    outer = sweep.bar(len(todo) * recipe.epochs * steps, "sweep", "step")
    for run in todo:
        _train_one(sweep, run, outer)
    if outer is not None:
        outer.close()


def _progress(inner: tqdm | None, outer: tqdm | None) -> Callable[[int, float], None]:
    """The ``progress`` callback of a run: advances the run's bar (showing the step loss) and the
    sweep's."""
    def progress(n: int, loss: float) -> None:
        if inner is not None:
            inner.update(n)
            inner.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if outer is not None:
            outer.update(n)

    return progress


def _train_one(sweep: Sweep, run: TrainingRun, outer: tqdm | None) -> None:
    """Train and evaluate ``run`` (every rank), and on the first rank append its record (a run
    that raised is a record of status ``error`` with the traceback) and its per-image results,
    and remove its checkpoint unless it failed. In a job of several processes a run that raised
    ends this rank (:class:`RankFailed`, after its record on the first rank)."""
    recipe, key = sweep.recipe, run.key()
    checkpoint = sweep.out / "checkpoints" / f"{run.attn}-seed{run.seed}-{recipe.fingerprint()}.pt"
    inner = sweep.bar(recipe.epochs * (len(sweep.train) // recipe.batch_size), run.label(), "step")
    started = time.time()
    try:
        result = train_run(recipe.arch, run.network(), run.seed, recipe, sweep.train, sweep.val, sweep.info,
                           checkpoint=checkpoint, run_key=key, progress=_progress(inner, outer)).as_dict()
    except Exception as error:  # noqa: BLE001 - one broken module must not end a single-process sweep
        result = {**failure_fields(error, "error"), "traceback": format_traceback(error)}
    finally:
        if inner is not None:
            inner.close()
    per_image = result.pop("per_image", None)
    if sweep.info.is_main:
        _keep(sweep, run, result, per_image, started, checkpoint)
    if result["status"] == "error" and sweep.info.distributed:
        print(f"rank {sweep.info.rank}: {run.label()} failed; the other ranks cannot go on without this one\n"
              f"{result['traceback']}", file=sys.stderr, flush=True)
        raise RankFailed(sweep.info.rank, f"{run.label()}: {result['message']}")


def _keep(sweep: Sweep, run: TrainingRun, result: dict[str, Any], per_image: dict[str, list] | None,
          started: float, checkpoint: Path) -> None:
    """On the first rank: append ``run``'s record and per-image results, remove its checkpoint
    unless it failed, and print its result line."""
    key = run.key()
    record = _record(sweep, run, result, started)
    sweep.runs.append(record, environment=sweep.environment)
    if per_image is not None:
        sweep.per_image.append(per_image_line(key, run.attn, run.seed, per_image, sweep.val.identity))
    if result["status"] != "error":
        checkpoint.unlink(missing_ok=True)
    sweep.say(_run_line(record))


def _record(sweep: Sweep, run: TrainingRun, result: dict[str, Any], started: float) -> dict[str, Any]:
    """The record of a finished (or failed) run: its key and row, the recipe and data, the
    result, the environment and the comparison's identity."""
    recipe = sweep.recipe
    record: dict[str, Any] = {"key": run.key(), **run.as_row(), "profile": recipe.profile, "arch": recipe.arch,
                              "data": shown_path(sweep.root), "holdout": sweep.settings.holdout,
                              "num_classes": len(sweep.train.classes), "world_size": sweep.info.world_size,
                              "per_rank_batch": recipe.batch_size // sweep.info.world_size,
                              "recipe": recipe.fingerprint(), **result, "started": started,
                              "recipe_config": recipe.as_dict()}
    record.update(sweep.environment)
    record.update(sweep.identity)
    return record


def _load_data(settings: AccuracySettings, recipe: Recipe, root: Path, info: DistInfo) -> tuple[SplitData, SplitData]:
    """The training and evaluation splits: train/ and val/, or with ``--holdout`` the two parts
    of train/. The first rank decodes into the cache first, the others then read it. Classes or
    splits the data does not have are a :class:`UsageError`."""
    try:
        classes = select_classes(list_classes(root), recipe.classes, recipe.num_classes)
    except (ValueError, DataNotFoundError) as error:
        raise UsageError(str(error)) from None
    fit, evaluated = _split_parts(recipe, settings.holdout)
    try:
        return (_load_part(settings, recipe, root, classes, fit, info),
                _load_part(settings, recipe, root, classes, evaluated, info))
    except DataNotFoundError as error:
        raise UsageError(str(error)) from None


SplitPart = tuple[str, int | None, str]
"""Which images a split holds: the folder read, the images per class (None: all) and the part
of it (``all``, or ``fit`` / ``holdout`` of train/ with ``--holdout``)."""


def _split_parts(recipe: Recipe, holdout: float) -> tuple[SplitPart, SplitPart]:
    """The training and the evaluation split's :data:`SplitPart`."""
    if not holdout:
        return ("train", recipe.train_per_class, "all"), ("val", recipe.val_per_class, "all")
    return ("train", recipe.train_per_class, "fit"), ("train", None, "holdout")


def _load_part(settings: AccuracySettings, recipe: Recipe, root: Path, classes: list[str],
               part: SplitPart, info: DistInfo) -> SplitData:
    """One split (:func:`_split_parts`), decoded by the first rank before the others read it."""
    import torch.distributed as dist

    split, per_class, which = part
    if info.distributed and not info.is_main:
        dist.barrier()  # rank 0 builds the cache first
    bar = _bar(info, settings.no_progress, None, f"decode {split}" + (f" ({which})" if which != "all" else ""),
               "img")
    data = load_split(root, split, classes, recipe.cache_size, per_class=per_class,
                      cache_dir=Path(settings.cache_dir) if settings.cache_dir else None, workers=settings.workers,
                      holdout=settings.holdout, part=which, progress=bar.update if bar is not None else None)
    if bar is not None:
        bar.close()
    if info.distributed and info.is_main:
        dist.barrier()
    if data.skipped:
        _say(info, f"{split}: skipped {len(data.skipped)} unreadable file(s): "
                   f"{', '.join(data.skipped[:5])}{' ...' if len(data.skipped) > 5 else ''}")
    return data


def _gate_scale(attn: str, arch: str, num_classes: int, size: int) -> float:
    """:func:`gate_scale_at_init` in the run's network at its input size, NaN for a design
    that cannot run there."""
    try:
        return gate_scale_at_init(attn, arch, num_classes, size)
    except Exception:  # noqa: BLE001 - a plugin refusing the probe must not stop the sweep
        return math.nan


def _write_val_manifest(out: Path, val: SplitData) -> None:
    """The val images the per-image records refer to, once per data identity."""
    path = out / val_manifest_name(val.identity)
    if not path.exists():
        manifest = {"val_id": val.identity, "classes": val.classes, "files": val.files,
                    "labels": val.labels.tolist()}
        write_text_atomic(path, json.dumps(manifest) + "\n")


def _placeable(attns: list[str], arch: str, num_classes: int, spec: str, info: DistInfo) -> list[str]:
    """The entries of ``attns`` that ``build_model`` can put into ``arch``; the others are
    skipped with their reason. An entry named explicitly in ``spec`` (not by a pattern) that
    cannot be placed is a :class:`UsageError`."""
    from .train import build_network

    explicit = {s.strip() for s in spec.split(",") if not any(ch in s for ch in "*?[")}
    fit, refused = [], {}
    for name in attns:
        try:
            build_network(arch, name, num_classes)
        except ValueError as error:
            refused[name] = str(error)
        else:
            fit.append(name)
    for name, reason in refused.items():
        _say(info, f"skipping {name}: {reason}")
    if refused.keys() & explicit:
        raise UsageError(f"cannot build {arch} with {', '.join(sorted(refused.keys() & explicit))}")
    return fit


def _run_line(r: dict[str, Any]) -> str:
    """A run's result in one line: its scores, or its status and message."""
    if r["status"] == "ok":
        return (f"{r['attn']:>14s} seed {r['seed']}: top-1 {100 * r['top1']:.2f}%  top-5 {100 * r['top5']:.2f}%  "
                f"val loss {r['val_loss']:.3f}  {r['epochs']} epochs  {r['wall_s']:.0f} s")
    return f"{r['attn']:>14s} seed {r['seed']}: {r['status']} ({r.get('message', '')})"
