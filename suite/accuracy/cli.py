"""``python -m suite accuracy``: paired-seed accuracy deltas of attention types over a baseline.

For every seed and every chosen attention type (the baseline ``none`` first) one run is
trained and evaluated (``train.py``); each finished run appends one record to
``OUT/runs.jsonl``. A re-run skips the runs already recorded (status ``ok`` or ``diverged``)
and resumes a half-finished one from its checkpoint in ``OUT/checkpoints/``. After the sweep,
``runs.csv`` (one row per run), ``deltas.csv`` (per attention type: mean top-1/top-5 and the
paired delta over the baseline with its 95% t interval) and ``summary.md`` are rewritten from
all records.

Many processes: ``torchrun --nproc_per_node N -m suite accuracy --preset gpu ...``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from suite.env import collect_environment
from suite.portable import format_traceback, shown_path
from suite.records import RecordStore, folder_lock, write_csv_atomic, write_text_atomic
from suite.stage import failure_fields, pending
from suite.stage import write_tables as write_stage_tables

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
from .data import (
    DataNotFoundError,
    list_classes,
    load_split,
    resolve_data_root,
    select_classes,
    torchvision_imagenette,
)
from .identity import (
    IDENTITY_FIELDS,
    design_code_version,
    per_image_line,
    run_identity,
    same_comparison,
    val_manifest_name,
)
from .recipe import AUGMENTS, DEFAULT_SEEDS, PROFILES, make_recipe
from .stats import delta_table, image_sampling_se, per_class_table
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

__all__ = ["AccuracySettings", "SETTINGS", "add_arguments", "main", "SOURCE_DESIGNS", "build_tables", "comparison",
           "tables", "resolve_attention", "write_tables"]

SOURCE_DESIGNS = ("se", "eca", "ca", "gsop", "cbam", "dycaconv", "dsan_channel")
"""The designs the accuracy stage compares by default (``--attn``): SE, ECA, CA, GSoP, CBAM, DyCAConv and DSAN channel attention."""


@dataclass(frozen=True)
class TrainingRun:
    """One training run of the sweep (a configuration of :mod:`suite.stage`): a design and a
    seed, in a ``context`` that names everything two runs must share to be paired (the arch,
    data, recipe, precision, threads and training code)."""

    attn: str
    seed: int
    context: str

    def key(self) -> str:
        """Its record's key: the run, its context and the design's own code version."""
        return f"{self.attn}|seed={self.seed}|{self.context}|design={design_code_version(self.attn)}"

    def as_row(self) -> dict[str, Any]:
        """The design and the seed."""
        return {"attn": self.attn, "seed": self.seed}

    def label(self) -> str:
        """A few words for the progress bar."""
        return f"{self.attn} seed {self.seed}"


RECIPE = "recipe overrides"


def _recipe(flag: str, help_text: str, parse: Any = None, **kwargs: Any) -> Any:
    """A recipe override: ``None`` (the default) keeps the preset's value."""
    return setting(Option(flag, help_text, parse=parse, group=RECIPE, **kwargs), None, default_text="the preset's")


@dataclass
class AccuracySettings:
    """The accuracy stage's settings (one flag per field; ``python -m suite accuracy --help``).
    ``None`` in a recipe field means the preset's value (``suite.accuracy.recipe.PROFILES``)."""

    preset: str = setting("--preset", "cpu", choices=tuple(PROFILES), default_text=(
        "cpu; smoke: seconds, for tests; cpu: small ResNet at 32 px on 2 cores; gpu: 224 px ResNet-18/50, "
        "AMP, torchrun"))
    attn: str = setting("--attn", ",".join(SOURCE_DESIGNS), default_text=(
        f"the source designs {','.join(SOURCE_DESIGNS)}; the baseline 'none' is always run too"))
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
    cache_dir: Path | None = setting(Option("--cache-dir", "decoded-image cache", parse=Path, metavar="DIR"),
                                     None, default_text="$ATTNBENCH_CACHE or ~/.cache/attnbench")
    workers: int | None = setting(Option("--workers", "processes decoding images", parse=positive_int,
                                         metavar="N"), None, default_text="CPU count, max 8")
    device: str | None = setting("--device", None, choices=("auto", "cpu", "cuda"),
                                 default_text="cuda for the gpu preset when available, else cpu")
    threads: int | None = setting("--threads", None, default_text="torch's choice; torchrun sets 1")
    no_progress: bool = setting("--no-progress", False)
    tables_only: bool = setting("--tables-only", False)
    arch: tuple[str, ...] | None = setting("--arch", None, default_text=(
        "the preset's; one backbone for modules.build_model (resnet_small, resnet18, resnet50...)"))
    epochs: int | None = _recipe("--epochs", "training epochs", positive_int, metavar="N")
    batch: tuple[int, ...] | None = setting("--batch", None, default_text=(
        "the preset's; one global batch size, divisible by the ranks"))
    lr: float | None = _recipe("--lr", "peak learning rate for the global batch", positive_float,
                                              metavar="LR")
    weight_decay: float | None = _recipe("--weight-decay", "weight decay of conv/linear weights",
                                                        non_negative_float, metavar="WD")
    warmup_epochs: float | None = _recipe("--warmup-epochs", "linear warm-up, in epochs",
                                                         non_negative_float, metavar="E")
    label_smoothing: float | None = _recipe("--label-smoothing", "cross-entropy label smoothing",
                                                           non_negative_float, metavar="F")
    size: tuple[int, ...] | None = setting("--size", None, default_text="the preset's; one side of the network input")
    cache_size: int | None = _recipe("--cache-size", "side of the cached images (>= --size)",
                                                    positive_int, metavar="S")
    augment: str | None = _recipe(
        "--augment", "rrc: random-resized crop + flip; crop: pad-and-crop + flip; none", choices=AUGMENTS)
    num_classes: int | None = _recipe("--num-classes", "use the first N classes (sorted)",
                                                     positive_int, metavar="N")
    classes: tuple[str, ...] | None = _recipe(
        "--classes", "class folder names to use, comma-separated", comma_list, metavar="NAME[,NAME...]")
    train_per_class: int | None = _recipe("--train-per-class", "training images per class",
                                                         positive_int, metavar="N")
    val_per_class: int | None = _recipe("--val-per-class", "validation images per class",
                                                       positive_int, metavar="N")
    holdout: float = setting(Option(
        "--holdout", "for recipe choices: evaluate on a fixed FRACTION of each train/ class (the files whose "
        "SHA-1 of the path sorts first) and train on the rest; val/ is not read (0: train on train/ and "
        "evaluate on val/)", parse=non_negative_float, metavar="FRACTION", group=RECIPE), 0.0)
    amp: bool | None = setting(Option(
        "--amp", "bf16 autocast on CUDA, and on CPUs with native bf16 (AVX512-BF16/AMX)", kind="toggle",
        group=RECIPE), None, default_text="the preset's")

    def __post_init__(self) -> None:
        for name in ("arch", "batch", "size"):
            value = getattr(self, name)
            if value is not None and len(value) != 1:
                raise ValueError(f"--{name}: the accuracy stage takes one value, got {','.join(map(str, value))}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"--holdout must be a fraction in [0, 1), got {self.holdout}")


SETTINGS = AccuracySettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the accuracy stage's flags (from :class:`AccuracySettings`) to ``parser``."""
    add_options(parser, AccuracySettings)


def resolve_attention(spec: str) -> list[str]:
    """Registered names matching the comma-separated names / fnmatch patterns of ``spec``
    (:func:`modules.list_attention`, in the order given, without the baseline, which is always
    run); a name or pattern that matches nothing is a ValueError."""
    import modules

    patterns = [item.strip() for item in spec.split(",") if item.strip() and item.strip() != BASELINE]
    return modules.list_attention(patterns, strict=True) if patterns else []


def _recipe_from_args(args: argparse.Namespace):
    def one(values: tuple[Any, ...] | None) -> Any:
        return values[0] if values else None

    image_size = one(args.size)
    overrides = {
        "arch": one(args.arch), "epochs": args.epochs, "batch_size": one(args.batch), "lr": args.lr,
        "weight_decay": args.weight_decay, "warmup_epochs": args.warmup_epochs,
        "label_smoothing": args.label_smoothing, "image_size": image_size,
        "augment": args.augment, "num_classes": args.num_classes, "classes": args.classes or None,
        "train_per_class": args.train_per_class, "val_per_class": args.val_per_class, "amp": args.amp,
    }
    base = PROFILES[args.preset]
    if image_size is not None and args.cache_size is None:
        overrides["cache_size"] = max(image_size, round(image_size * base.cache_size / base.image_size))
    else:
        overrides["cache_size"] = args.cache_size
    return make_recipe(args.preset, **overrides)


def _say(info: DistInfo, text: str) -> None:
    if info.is_main:
        print(text, flush=True)


def main(args: argparse.Namespace) -> int:
    """Run the sweep; 0 on success, 2 on a usage or data error."""
    out = Path(args.out) if args.out else Path("runs") / "accuracy" / args.preset
    if args.tables_only:
        return _tables_only(out)
    try:
        recipe = _recipe_from_args(args)
        attns = resolve_attention(args.attn)
        # under torchrun only the first process of each machine downloads; the others wait for it
        first = os.environ.get("LOCAL_RANK", "0") == "0"
        root = resolve_data_root(args.data, Path(args.cache_dir) if args.cache_dir else None,
                                 downloader=torchvision_imagenette, wait=not first)
    except (ValueError, DataNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    device = args.device or ("auto" if args.preset == "gpu" else "cpu")
    info = init_distributed(device)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if info.device.type == "cpu":
        torch.set_flush_denormal(True)  # denormal weights late in training can slow CPU kernels many-fold
    seeds = list(range(args.first_seed, args.first_seed + (args.seeds or DEFAULT_SEEDS[args.preset])))
    finished = False
    try:
        if info.is_main:
            with folder_lock(out):
                code = _sweep(args, recipe, attns, root, seeds, out, info)
        else:
            code = _sweep(args, recipe, attns, root, seeds, out, info)
        finished = True
        return code
    finally:
        close_distributed(finished)


def _load_data(args, recipe, root: Path, info: DistInfo):
    import torch.distributed as dist

    try:
        classes = select_classes(list_classes(root), recipe.classes, recipe.num_classes)
    except ValueError as error:
        raise DataNotFoundError(str(error)) from None
    splits = {}
    holdout = args.holdout
    parts = ((("train", "train", recipe.train_per_class, "all"), ("val", "val", recipe.val_per_class, "all"))
             if not holdout else (("train", "train", recipe.train_per_class, "fit"), ("val", "train", None, "holdout")))
    for role, split, per_class, part in parts:
        kwargs = {"per_class": per_class, "cache_dir": Path(args.cache_dir) if args.cache_dir else None,
                  "workers": args.workers, "holdout": holdout, "part": part}
        if info.distributed and not info.is_main:
            dist.barrier()  # rank 0 builds the cache first
        bar = _bar(info, args, None, f"decode {split}" + (f" ({part})" if part != "all" else ""), "img")
        data = load_split(root, split, classes, recipe.cache_size, progress=bar.update if bar is not None else None, **kwargs)
        if bar is not None:
            bar.close()
        if info.distributed and info.is_main:
            dist.barrier()
        if data.skipped:
            _say(info, f"{split}: skipped {len(data.skipped)} unreadable file(s): "
                       f"{', '.join(data.skipped[:5])}{' ...' if len(data.skipped) > 5 else ''}")
        splits[role] = data
    return splits["train"], splits["val"]


def _bar(info: DistInfo, args, total: int | None, desc: str, unit: str):
    if not info.is_main or args.no_progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=1.0, leave=False)


def _sweep(args, recipe, attns: list[str], root: Path, seeds: list[int], out: Path, info: DistInfo) -> int:
    try:
        train, val = _load_data(args, recipe, root, info)
    except DataNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    attns, refused = _placeable(attns, recipe.arch, len(train.classes), args.attn)
    for name, reason in refused.items():
        _say(info, f"skipping {name}: {reason}")
    if attns is None:
        return 2
    import torch

    store = RecordStore(out / "runs.jsonl")
    images_store = RecordStore(out / "per_image.jsonl")
    env = collect_environment() if info.is_main else {}
    fingerprint = recipe.fingerprint()
    identity = run_identity(fingerprint, train.identity, val.identity, amp_active(recipe, info.device),
                            torch.get_num_threads())
    # everything that must match for two runs to be paired (suite.accuracy.identity)
    context = (f"{recipe.arch}|{root.name}|{fingerprint}|data={identity['data_id']}|{identity['precision']}|"
               f"threads={identity['threads']}|code={identity['code_version']}")
    plan = [TrainingRun(attn, seed, context) for seed in seeds for attn in [BASELINE, *attns]]
    if info.is_main:
        _write_val_manifest(out, val)
        scales = [{"attn": a, "gate_scale_at_init": _gate_scale(a)} for a in attns]
        write_csv_atomic(out / "gate_scale.csv", pd.DataFrame(scales, columns=["attn", "gate_scale_at_init"]))

    # the runs still to do: decided by the first rank, which holds the records (a diverged run is a result)
    todo = pending(plan, store, retry_failed=True)[0] if info.is_main else []
    todo = broadcast_object(todo, info)
    _say(info, f"accuracy: profile {recipe.profile}, {recipe.arch} at {recipe.image_size} px, "
               f"{len(train)} train / {len(val)} val images, {len(train.classes)} classes, "
               f"{info.world_size} process(es) on {info.device}; {len(plan)} runs, "
               f"{len(plan) - len(todo)} already done, {len(todo)} to do -> {out}")
    steps = len(train) // recipe.batch_size
    outer = _bar(info, args, len(todo) * recipe.epochs * steps, "sweep", "step")
    for run in todo:
        attn, seed, key = run.attn, run.seed, run.key()
        checkpoint = out / "checkpoints" / f"{attn}-seed{seed}-{fingerprint}.pt"
        inner = _bar(info, args, recipe.epochs * steps, run.label(), "step")

        def progress(n: int, loss: float, inner=inner) -> None:
            if inner is not None:
                inner.update(n)
                inner.set_postfix(loss=f"{loss:.3f}", refresh=False)
            if outer is not None:
                outer.update(n)

        started = time.time()
        try:
            result = train_run(recipe.arch, attn, seed, recipe, train, val, info,
                               checkpoint=checkpoint, run_key=key, progress=progress).as_dict()
        except Exception as error:  # noqa: BLE001 - one broken module must not end the sweep
            result = {**failure_fields(error, "error"), "traceback": format_traceback(error)}
        finally:
            if inner is not None:
                inner.close()
        per_image = result.pop("per_image", None)
        if info.is_main:
            record: dict[str, Any] = {"key": key, **run.as_row(), "profile": recipe.profile,
                                      "arch": recipe.arch, "data": shown_path(root), "holdout": args.holdout,
                                      "num_classes": len(train.classes),
                                      "world_size": info.world_size,
                                      "recipe": fingerprint, **result, "started": started,
                                      "recipe_config": recipe.as_dict()}
            record.update(env)
            record.update(identity)
            store.append(record, environment=env)
            if per_image is not None:
                images_store.append(per_image_line(key, attn, seed, per_image, val.identity))
            if result["status"] != "error":
                checkpoint.unlink(missing_ok=True)
            _say(info, _run_line(record))
    if outer is not None:
        outer.close()
    if not info.is_main:
        return 0
    _say(info, write_tables(store, out, identity))
    latest = {r["key"]: r for r in store.latest_by_key()}
    if not any(latest.get(run.key(), {}).get("status") == "ok" for run in plan):
        print(f"error: none of the {len(plan)} runs finished (see the statuses above and {out / 'runs.jsonl'})",
              file=sys.stderr)
        return 1
    return 0


def _tables_only(out: Path) -> int:
    """``--tables-only``: rewrite the tables and ``summary.md`` in ``out`` from its records."""
    records = out / "runs.jsonl"
    if not records.is_file():
        print(f"error: --tables-only: no records in {out} (expected {records})", file=sys.stderr)
        return 2
    with folder_lock(out):
        write_tables(RecordStore(records), out)
    print(f"accuracy: tables and summary.md in {out} rewritten from {records}", file=sys.stderr)
    return 0


def _gate_scale(attn: str) -> float:
    """:func:`gate_scale_at_init`, NaN for a module that cannot run at its probe shape."""
    try:
        return gate_scale_at_init(attn)
    except Exception:  # noqa: BLE001 - a plugin refusing the probe must not stop the sweep
        return math.nan


def _write_val_manifest(out: Path, val) -> None:
    """The val images the per-image records refer to, once per data identity."""
    path = out / val_manifest_name(val.identity)
    if not path.exists():
        manifest = {"val_id": val.identity, "classes": val.classes, "files": val.files,
                    "labels": val.labels.tolist()}
        write_text_atomic(path, json.dumps(manifest) + "\n")


def _placeable(attns: list[str], arch: str, num_classes: int, spec: str) -> tuple[list[str] | None, dict[str, str]]:
    """The entries of ``attns`` that ``build_model`` can put into ``arch``, and why the others
    cannot. ``None`` instead of the list when an explicitly named entry cannot be placed."""
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
    if refused.keys() & explicit:
        print(f"error: cannot build {arch} with {', '.join(sorted(refused.keys() & explicit))}", file=sys.stderr)
        return None, refused
    return fit, refused


def _run_line(r: dict[str, Any]) -> str:
    if r["status"] == "ok":
        return (f"{r['attn']:>14s} seed {r['seed']}: top-1 {100 * r['top1']:.2f}%  top-5 {100 * r['top5']:.2f}%  "
                f"val loss {r['val_loss']:.3f}  {r['epochs']} epochs  {r['wall_s']:.0f} s")
    return f"{r['attn']:>14s} seed {r['seed']}: {r['status']} ({r.get('message', '')})"


METRICS = ("top1", "top5", "train_loss", "val_loss")
"""What is compared between a design and the baseline, each paired over seeds."""

RUN_COLUMNS = ["attn", "seed", "status", "top1", "top5", "val_loss", "train_loss", "epochs", "wall_s",
               "epoch_s", "params", "shared_entries", "resumed_from", "bf16", "world_size", "profile", "arch",
               "recipe", "message"]

LEGACY_FIELDS = {"note": "message"}
"""Record fields of older runs, by the name the tables give them now (the text of a run that is
not ``ok`` is its ``message``, as in every stage)."""


def build_tables(
    records: list[dict[str, Any]], identity: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], pd.DataFrame, list[dict[str, Any]]]:
    """From per-run records (one per key): the records of one comparison (``identity``'s, by
    default the last record's; :func:`suite.accuracy.identity.same_comparison`), the runs
    table (baseline first, then by attention type and seed) and the paired delta table. Runs
    of different recipes, data, precision, thread counts or code are never compared."""
    records = [{LEGACY_FIELDS.get(k, k): v for k, v in r.items() if k != "traceback"} for r in records]
    if records:
        identity = identity or {k: records[-1].get(k) for k in IDENTITY_FIELDS}
        records = same_comparison(records, identity)
    runs = pd.DataFrame(records)
    if runs.empty:
        return records, runs, []
    ordered = [c for c in RUN_COLUMNS if c in runs.columns]
    ordered += [c for c in runs.columns if c not in RUN_COLUMNS and c != "recipe_config"]
    runs = runs.assign(_baseline_last=runs["attn"] != BASELINE).sort_values(["_baseline_last", "attn", "seed"])
    return records, runs[ordered].reset_index(drop=True), delta_table(records, baseline=BASELINE, metrics=METRICS)


def comparison(records: list[dict[str, Any]], folder: Path, identity: dict[str, Any] | None = None
               ) -> tuple[list[dict[str, Any]], dict[str, pd.DataFrame], list[dict[str, Any]]]:
    """The records of one comparison (``identity``'s, by default the last record's), its tables
    (``runs.csv``, ``deltas.csv`` and, with per-image results in ``folder``, ``per_class.csv``)
    and the delta entries; no tables without a finished run."""
    records, runs, deltas = build_tables(records, identity)
    if runs.empty:
        return records, {}, deltas
    frames = {"runs.csv": runs}
    correct, manifest = per_image_results(folder, records)
    if manifest is not None:
        sampling = image_sampling_se(correct, BASELINE)
        for entry in deltas:
            entry["top1_se_images"] = sampling.get(entry["attn"], math.nan)
        per_class = per_class_table(correct, manifest["labels"], manifest["classes"], BASELINE)
        frames["per_class.csv"] = pd.DataFrame(per_class)
    frames["deltas.csv"] = pd.DataFrame(deltas)
    return records, frames, deltas


def tables(records: list[dict[str, Any]], folder: Path) -> dict[str, pd.DataFrame]:
    """The accuracy stage's tables from its records (one per key) and the per-image results in
    ``folder``: those of the last record's comparison (:func:`comparison`)."""
    return comparison(records, folder)[1]


def write_tables(store: RecordStore, out: Path, identity: dict[str, Any] | None = None) -> str:
    """Rewrite ``runs.csv``, ``deltas.csv``, ``per_class.csv`` and ``summary.md`` from the
    records of one comparison (``identity``'s, by default the last record's); returns the
    summary's text."""
    records, frames, deltas = comparison(store.latest_by_key(), out, identity)
    if not frames:
        return "no finished runs"
    write_stage_tables(out, frames)
    text = summary_markdown(records, deltas)
    write_text_atomic(out / "summary.md", text)
    return text


def per_image_results(out: Path, records: list[dict[str, Any]]) -> tuple[dict[str, dict[int, list[bool]]], dict | None]:
    """Top-1 right or wrong per val image, ``{attn: {seed: [bool, ...]}}``, for the finished runs
    among ``records``, and the manifest of their val images (None without per-image records)."""
    path = out / "per_image.jsonl"
    finished = {r["key"] for r in records if r.get("status") == "ok"}
    if not path.exists() or not finished:
        return {}, None
    lines = [line for line in RecordStore(path).latest_by_key() if line.get("key") in finished]
    val_ids = {line["val_id"] for line in lines}
    if len(val_ids) != 1 or not (out / val_manifest_name(next(iter(val_ids)))).exists():
        return {}, None
    manifest = json.loads((out / val_manifest_name(val_ids.pop())).read_text())
    correct: dict[str, dict[int, list[bool]]] = {}
    for line in lines:
        correct.setdefault(line["attn"], {})[int(line["seed"])] = [c == "1" for c in line["correct"]]
    return correct, manifest


def _pct(value: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _p(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def summary_markdown(records: list[dict[str, Any]], table: list[dict[str, Any]]) -> str:
    """A markdown table: mean top-1/top-5, paired top-1 delta with its 95% CI, and a verdict."""
    first = records[0]
    wall = sum(float(r.get("wall_s") or 0) for r in records)
    lines = [
        f"# Accuracy: {first.get('profile')} profile, {first.get('arch')} on {Path(str(first.get('data'))).name}",
        "",
        f"{len(records)} runs, {wall / 60:.1f} min of training and evaluation in all; top-1/top-5 in %; "
        "delta = mean over seeds of (attention - baseline) at the same seed, 95% CI from the t distribution; "
        "p: paired t-test, Holm-adjusted over the designs (the verdict uses it); means over the paired seeds; "
        "a diverged run is scored at chance level.",
        "",
        "| attention | runs | top-1 | top-5 | top-1 delta | 95% CI | p | p (Holm) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in table:
        if row["attn"] == BASELINE:
            lines.append(f"| {BASELINE} (baseline) | {row['runs']} | {_pct(row['top1_mean'])} | "
                         f"{_pct(row['top5_mean'])} | | | | | |")
            continue
        if row.get("top1_reason"):
            verdict = f"no verdict: {row['top1_reason']}"
        elif row["top1_significant"]:
            verdict = "significant " + ("gain" if row["top1_delta"] > 0 else "loss")
        else:
            verdict = "not significant"
        if row.get("diverged"):
            verdict += f" ({row['diverged']} diverged, scored at chance)"
        ci = f"[{_pct(row['top1_ci_low'], True)}, {_pct(row['top1_ci_high'], True)}]"
        lines.append(f"| {row['attn']} | {row['runs']} | {_pct(row['top1_mean'])} | {_pct(row['top5_mean'])} | "
                     f"{_pct(row['top1_delta'], True)} | {ci} | {_p(row.get('top1_p'))} | "
                     f"{_p(row.get('top1_p_holm'))} | {verdict} |")
    bad = [r for r in records if r.get("status") != "ok"]
    if bad:
        lines += ["", "Runs that did not finish: " + ", ".join(f"{r['attn']} seed {r['seed']} ({r['status']})" for r in bad)]
    return "\n".join(lines) + "\n"
