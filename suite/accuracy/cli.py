"""``python -m suite accuracy``: paired-seed accuracy deltas of attention types over a baseline.

For every seed and every chosen attention type (the baseline ``none`` first) one run is
trained and evaluated (``train.py``); each finished run appends one record to
``OUT/runs.jsonl``. A re-run skips the runs already recorded (status ``ok`` or ``diverged``)
and resumes a half-finished one from its checkpoint in ``OUT/checkpoints/``. After the sweep,
``runs.csv`` (one row per run), ``deltas.csv`` (per attention type: mean top-1/top-5 and the
paired delta over the baseline with its 95% t interval) and ``summary.md`` are rewritten from
all records. ``--matched se,gsop`` adds, for each design named, a width-matched arm: the
backbone without attention, widened until its training step takes as long as the design's on
this machine (:mod:`suite.accuracy.matched`; ``matched.csv`` holds each search's result), trained
with the same seeds as ``matched_<design>``.

This module holds the settings and ``main``; :mod:`suite.accuracy.sweep` runs the sweep (the
distributed job and the loop over the runs), :mod:`suite.accuracy.tables` makes the tables.

The gpu preset trains on CUDA: where CUDA is not usable the command exits 2 before it reads
any data (``--device cpu`` trains on the CPU anyway). Many processes: ``torchrun
--nproc_per_node N -m suite accuracy --preset gpu ...``; the ranks wait for each other up to
``--dist-timeout`` minutes, and a run that raises on one rank ends the job with that rank's
message (:class:`suite.accuracy.sweep.RankFailed`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.errors import UsageError
from suite.records import FolderLockedError, RecordStore, folder_lock
from suite.shard import Shard
from suite.stages import stage

from ..options import (
    Option,
    add_options,
    comma_list,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    setting,
)
from .data import DataNotFoundError, resolve_data_root, torchvision_imagenette
from .matched import MATCHABLE_ARCHS, TOLERANCE, W_MAX
from .recipe import AUGMENTS, DEFAULT_SEEDS, PROFILES, Recipe, make_recipe
from .sweep import run_sweep, training_device
from .tables import write_tables

__all__ = ["AccuracySettings", "SETTINGS", "add_arguments", "main", "SOURCE_DESIGNS", "ONE_VALUE", "DIST_TIMEOUT_MIN",
           "recipe_of", "resolve_attention", "resolve_matched"]

SOURCE_DESIGNS = ("se", "eca", "ca", "gsop", "cbam", "dycaconv", "dsan_channel")
"""The designs the accuracy stage compares by default (``--attn``): SE, ECA, CA, GSoP, CBAM, DyCAConv and DSAN channel attention."""

DIST_TIMEOUT_MIN = 120.0
"""The default ``--dist-timeout``: two hours, room for the first rank to decode ImageNet-sized
data into the cache while the other ranks wait at a barrier (torch's own default for NCCL is
10 minutes)."""

RECIPE = "recipe overrides"
"""The help group of the flags that override the preset's recipe."""

ONE_VALUE = ("arch", "batch_size", "image_size")
"""Settings whose shared option takes a list (``--arch``, ``--batch``, ``--size``) where the
accuracy stage takes one value."""


def _recipe(flag: str, help_text: str, parse: Any = None, **kwargs: Any) -> Any:
    """A recipe override: ``None`` (the default) keeps the preset's value."""
    return setting(Option(flag, help_text, parse=parse, group=RECIPE, **kwargs), None, default_text="the preset's")


@dataclass
class AccuracySettings:
    """The accuracy stage's settings (one flag per field; ``python -m suite accuracy --help``).

    A field named like a :class:`~suite.accuracy.recipe.Recipe` field overrides it
    (:func:`recipe_of`); ``None`` there means the preset's value
    (``suite.accuracy.recipe.PROFILES``)."""

    preset: str = setting("--preset", "cpu", choices=tuple(PROFILES), default_text=(
        "cpu; smoke: seconds, for tests; cpu: small ResNet at 32 px on 2 cores; gpu: 224 px ResNet-18/50, "
        "AMP, torchrun"))
    attn: str = setting("--attn", ",".join(SOURCE_DESIGNS), default_text=(
        f"the source designs {','.join(SOURCE_DESIGNS)}; the baseline 'none' is always run too"))
    matched: tuple[str, ...] = setting(Option(
        "--matched", f"designs of --attn, comma-separated, each to get a width-matched arm: {', '.join(MATCHABLE_ARCHS)} "
        f"without attention, its widths scaled (x1 to x{W_MAX:g}, multiples of 8) until its training step takes as "
        f"long as the design's on this machine (within {TOLERANCE:.0%}), trained with the same seeds as "
        f"matched_<design>; the search's result is kept in matched.csv and reused", parse=comma_list,
        metavar="NAME[,NAME...]"), (), default_text="none")
    seeds: int | None = setting(Option(
        "--seeds", "number of seeds, paired across attention types, chosen from measured noise for a 95% "
        "half-width of at most 1 pp (see recipe.DEFAULT_SEEDS)", parse=positive_int, metavar="N"), None,
        default_text="per preset: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_SEEDS.items()))
    first_seed: int = setting(Option("--first-seed", "seeds are first-seed .. first-seed+seeds-1",
                                     parse=non_negative_int, metavar="N"), 0)
    data: str | None = setting(Option(
        "--data", "ImageFolder root with train/ and val/, or 'imagenette' for the copy in the cache folder "
        "(downloaded by torchvision when absent)", metavar="DIR"), None, default_text=(
        "$ATTNBENCH_DATA, else ../shared/datasets/imagenette beside the checkout or the current folder, "
        "else 'imagenette'"))
    out: Path | None = setting("--out", None, default_text="runs/accuracy/PRESET under the current folder")
    shard: Shard | None = setting("--shard", None, default_text="every run of the plan")
    cache_dir: Path | None = setting(Option("--cache-dir", "decoded-image cache", parse=Path, metavar="DIR"),
                                     None, default_text="$ATTNBENCH_CACHE or ~/.cache/attnbench")
    workers: int | None = setting(Option("--workers", "processes decoding images", parse=positive_int,
                                         metavar="N"), None, default_text="CPU count, max 8")
    device: str | None = setting("--device", None, choices=("auto", "cpu", "cuda"), default_text=(
        "cuda for the gpu preset (exit 2 where CUDA is not usable; --device cpu or auto trains it on the CPU), "
        "else cpu; auto: cuda when available"))
    dist_timeout: float = setting(Option(
        "--dist-timeout", "under torchrun, how long a rank waits for the others in a collective before the job "
        "fails, in minutes; covers the first rank decoding the data while the others wait",
        parse=positive_float, metavar="MIN"), DIST_TIMEOUT_MIN)
    threads: int | None = setting("--threads", None, default_text="torch's choice; torchrun sets 1")
    no_progress: bool = setting("--no-progress", False)
    tables_only: bool = setting("--tables-only", False)
    arch: tuple[str, ...] | None = setting("--arch", None, default_text=(
        "the preset's; one backbone for modules.build_model (resnet_small, resnet18, resnet50...)"))
    epochs: int | None = _recipe("--epochs", "training epochs", positive_int, metavar="N")
    batch_size: tuple[int, ...] | None = setting("--batch", None, default_text=(
        "the preset's; one global batch size, divisible by the ranks"))
    lr: float | None = _recipe("--lr", "peak learning rate for the global batch", positive_float, metavar="LR")
    weight_decay: float | None = _recipe("--weight-decay", "weight decay of conv/linear weights",
                                         non_negative_float, metavar="WD")
    warmup_epochs: float | None = _recipe("--warmup-epochs", "linear warm-up, in epochs", non_negative_float,
                                          metavar="E")
    label_smoothing: float | None = _recipe("--label-smoothing", "cross-entropy label smoothing",
                                            non_negative_float, metavar="F")
    image_size: tuple[int, ...] | None = setting("--size", None, default_text=(
        "the preset's; one side of the network input"))
    cache_size: int | None = _recipe("--cache-size", "side of the cached images (>= --size)", positive_int,
                                     metavar="S")
    augment: str | None = _recipe(
        "--augment", "rrc: random-resized crop + flip; crop: pad-and-crop + flip; none", choices=AUGMENTS)
    num_classes: int | None = _recipe("--num-classes", "use the first N classes (sorted)", positive_int,
                                      metavar="N")
    classes: tuple[str, ...] | None = _recipe(
        "--classes", "class folder names to use, comma-separated", comma_list, metavar="NAME[,NAME...]")
    train_per_class: int | None = _recipe("--train-per-class", "training images per class", positive_int,
                                          metavar="N")
    val_per_class: int | None = _recipe("--val-per-class", "validation images per class", positive_int,
                                        metavar="N")
    holdout: float = setting(Option(
        "--holdout", "for recipe choices: evaluate on a fixed FRACTION of each train/ class (the files whose "
        "SHA-1 of the path sorts first) and train on the rest; val/ is not read (0: train on train/ and "
        "evaluate on val/)", parse=non_negative_float, metavar="FRACTION", group=RECIPE), 0.0)
    amp: bool | None = setting(Option(
        "--amp", "bf16 autocast on CUDA, and on CPUs with native bf16 (AVX512-BF16/AMX)", kind="toggle",
        group=RECIPE), None, default_text="the preset's")

    def __post_init__(self) -> None:
        """Refuse more than one value of a :data:`ONE_VALUE` setting and a holdout outside [0, 1)."""
        for name in ONE_VALUE:
            value = getattr(self, name)
            if value is not None and len(value) != 1:
                raise UsageError(f"{_flag(name)}: the accuracy stage takes one value, got {','.join(map(str, value))}")
        if not 0.0 <= self.holdout < 1.0:
            raise UsageError(f"--holdout must be a fraction in [0, 1), got {self.holdout}")


SETTINGS = AccuracySettings


def _flag(name: str) -> str:
    """The command-line flag of the settings field ``name``."""
    return next(f.metadata["option"].flag for f in dataclasses.fields(AccuracySettings) if f.name == name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the accuracy stage's flags (from :class:`AccuracySettings`) to ``parser``."""
    add_options(parser, AccuracySettings)


def resolve_attention(spec: str) -> list[str]:
    """Registered names matching the comma-separated names / fnmatch patterns of ``spec``
    (:func:`modules.list_attention`, in the order given, without the baseline, which is always
    run); a name or pattern that matches nothing is a :class:`UsageError`."""
    import modules

    patterns = [item.strip() for item in spec.split(",") if item.strip() and item.strip() != modules.BASELINE]
    try:
        return modules.list_attention(patterns, strict=True) if patterns else []
    except ValueError as error:
        raise UsageError(str(error)) from None


def resolve_matched(names: tuple[str, ...], attns: list[str], arch: str) -> list[str]:
    """The designs of ``--matched`` (``names``, duplicates dropped), each checked: it must be
    one of this run's designs ``attns`` (the arm is compared with it) and ``arch`` one the arm can
    widen; anything else is a :class:`UsageError` naming what is accepted."""
    import modules

    chosen = list(dict.fromkeys(n for n in names if n != modules.BASELINE))
    if not chosen:
        return []
    if arch not in MATCHABLE_ARCHS:
        raise UsageError(f"--matched widens {', '.join(MATCHABLE_ARCHS)} only (its stem and stage widths); this run "
                         f"trains {arch}: pass --arch {MATCHABLE_ARCHS[0]} or leave --matched out")
    unknown = [n for n in chosen if n not in modules.list_attention()]
    absent = [n for n in chosen if n not in attns and n not in unknown]
    if unknown or absent:
        problems = ([f"unknown design(s) {', '.join(unknown)}"] if unknown else []) + (
            [f"{', '.join(absent)} not among this run's designs (add to --attn)"] if absent else [])
        raise UsageError(f"--matched: {'; '.join(problems)}; accepted: the designs of --attn "
                         f"({', '.join(attns) or 'none'})")
    return chosen


def recipe_of(settings: AccuracySettings) -> Recipe:
    """The preset's recipe, overridden by each setting named like a :class:`Recipe` field that is
    not None (a :data:`ONE_VALUE` setting gives its one value). A recipe that cannot be made
    (a cache smaller than the input...) is a :class:`UsageError`."""
    overrides = {f.name: getattr(settings, f.name) for f in dataclasses.fields(Recipe) if hasattr(settings, f.name)}
    for name in ONE_VALUE:
        overrides[name] = overrides[name][0] if overrides[name] else None
    try:
        return make_recipe(settings.preset, **overrides)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _data_root(settings: AccuracySettings) -> Path:
    """The dataset root of ``--data`` (:func:`suite.accuracy.data.resolve_data_root`); under
    torchrun only the first process of each machine downloads, the others wait for it."""
    first = os.environ.get("LOCAL_RANK", "0") == "0"
    try:
        return resolve_data_root(settings.data, Path(settings.cache_dir) if settings.cache_dir else None,
                                 downloader=torchvision_imagenette, wait=not first)
    except (ValueError, DataNotFoundError) as error:
        raise UsageError(str(error)) from None


def main(settings: AccuracySettings) -> int:
    """Run the sweep, or with ``--tables-only`` rewrite the tables; 0 on success, 1 when none of
    the runs finished. Refused input (a device this machine lacks, data that is not there...) is
    a :class:`UsageError`, raised before any data is decoded."""
    out = Path(settings.out) if settings.out else Path("runs") / "accuracy" / settings.preset
    try:
        if settings.tables_only:
            return _tables_only(out)
        recipe = recipe_of(settings)
        attns = resolve_attention(settings.attn)
        matched = resolve_matched(settings.matched, attns, recipe.arch)
        if matched and settings.shard:
            raise UsageError("--matched with --shard: each part would search its own width and train different "
                             "networks under one name; run the accuracy stage unsharded, or leave --matched out "
                             "(in the bench: --set accuracy.matched=)")
        training_device(settings)
        summary = run_sweep(settings, recipe, attns, _data_root(settings), out, matched)
    except FolderLockedError as exc:  # another run writes this folder
        raise UsageError(str(exc)) from None
    if summary.finished == 0:
        print(f"error: none of the {summary.runs} runs finished (see the statuses above and {summary.records})",
              file=sys.stderr)
        return 1
    return 0


def _tables_only(out: Path) -> int:
    """``--tables-only``: rewrite the tables and ``summary.md`` in ``out`` from its records."""
    records = out / str(stage("accuracy").records_file)
    if not records.is_file():
        raise UsageError(f"--tables-only: no records in {out} (expected {records})")
    with folder_lock(out):
        write_tables(RecordStore(records), out)
    print(f"accuracy: tables and summary.md in {out} rewritten from {records}", file=sys.stderr)
    return 0
