"""``python -m suite cost``: parameters, MACs, FLOPs and activation bytes, every counter side by side.

Writes, under ``--out``:

* ``cost_records.jsonl``: raw records (one per configuration, with the environment); a
  re-run skips what is already there with status ``ok`` (``--fresh`` re-measures);
* ``cost_module.csv``: one row per attention type x input shape, one column per counter;
* ``cost_model.csv``: one row per architecture x attention type, absolute and ``delta_*``
  over the same architecture without attention; an entry with no place in an architecture
  gets a row with status ``refused`` and build_model's reason.

Both tables are rebuilt from all the records in the folder after each run. Column
conventions: ``macs_*`` count one multiply-accumulate as 1, ``flops_*`` count 2 per MAC;
see ``suite/cost/counters.py`` for each column and ``suite/cost/op_rules.py`` for the rules.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import warnings
from pathlib import Path

import torch

__all__ = ["add_arguments", "main", "select_attention"]


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The cost stage's options (each documented in ``--help``)."""
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument(
        "--attn", default="*", metavar="PATTERN",
        help="attention types to measure: an fnmatch pattern over the registered names, or "
        "several separated by commas (e.g. 'se,eca*'). A pattern that matches nothing stops "
        "the run before anything is measured and lists the registered names.",
    )
    parser.add_argument(
        "--arch", nargs="+", default=None, metavar="ARCH",
        help="architectures for the model level (default: every one modules.list_archs() "
        "knows); each is measured without attention (the baseline for the delta_* columns) "
        "and with each selected attention type at its canonical place.",
    )
    parser.add_argument(
        "--level", choices=("module", "model", "both"), default="module",
        help="module: the grid of shapes below, one module at a time (a few minutes for the "
        "whole registry on 2 cores); model: whole backbones at --resolution (about 1-4 s per "
        "model); both: the two.",
    )
    parser.add_argument(
        "--channels", type=_int_list, default=[64, 256, 1024], metavar="C[,C...]",
        help="module level: input channels (a conv-kind entry gets out_channels = C).",
    )
    parser.add_argument(
        "--sizes", type=_int_list, default=[56, 28, 14, 7], metavar="H[,H...]",
        help="module level: square spatial sizes H = W.",
    )
    parser.add_argument("--batch", type=int, default=1, help="batch size of every input.")
    parser.add_argument(
        "--resolution", type=int, default=224,
        help="model level: the input image is resolution x resolution.",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("reports/cost"),
        help="output folder (raw records and CSVs); locked while a run writes it.",
    )
    parser.add_argument(
        "--fresh", action="store_true",
        help="re-measure every configuration instead of resuming from the records in --out.",
    )
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (counting does not time anything; 1 is kind to a shared machine).",
    )
    parser.add_argument(
        "--no-progress", action="store_true",
        help="no progress bar (by default a tqdm bar with ETA goes to stderr).",
    )


def select_attention(pattern: str) -> list[str]:
    """Registered names matching the comma-separated fnmatch patterns (``ValueError`` naming the
    registered names when a pattern matches nothing)."""
    import modules

    available = modules.list_attention()
    chosen: list[str] = []
    for part in [p.strip() for p in pattern.split(",") if p.strip()]:
        matched = [n for n in available if fnmatch.fnmatchcase(n, part)]
        if not matched:
            raise ValueError(
                f"--attn {part!r} matches no registered attention type. "
                f"Available: {', '.join(available) or '(none registered)'}"
            )
        chosen.extend(n for n in matched if n not in chosen)
    if not chosen:
        raise ValueError(f"--attn {pattern!r} selects nothing. Available: {', '.join(available)}")
    return chosen


def main(args: argparse.Namespace) -> int:
    """Run the selected grids. Returns 0 once the tables are written (rows with status
    ``error`` are listed on stderr, they do not fail the run), 2 on bad options."""
    # noise from the counters' imports, not about anything this stage does
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*distutils Version.*", category=DeprecationWarning)
    import modules

    from ..env import collect_environment
    from ..records import FolderLockedError, RecordStore, folder_lock, write_csv_atomic
    from .grid import model_jobs, model_table, module_jobs, module_table, run_jobs

    try:
        names = select_attention(args.attn)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    archs = args.arch if args.arch is not None else modules.list_archs()
    unknown = [a for a in archs if a not in modules.list_archs()]
    if unknown:
        print(f"error: unknown --arch {', '.join(unknown)}; available: {', '.join(modules.list_archs())}", file=sys.stderr)
        return 2
    if args.batch < 1 or args.resolution < 1 or args.threads < 1:
        print("error: --batch, --resolution and --threads must be positive", file=sys.stderr)
        return 2

    jobs = []
    if args.level in ("module", "both"):
        jobs += module_jobs(names, args.channels, args.sizes, args.batch)
    if args.level in ("model", "both"):
        jobs += model_jobs(names, archs, args.resolution, args.batch)

    torch.set_num_threads(args.threads)
    try:
        with folder_lock(args.out):
            store = RecordStore(args.out / "cost_records.jsonl")
            environment = collect_environment()
            measured, skipped, _ = run_jobs(
                jobs, store, environment, fresh=args.fresh, progress=not args.no_progress
            )
            records = store.latest_by_key()
            written = []
            for filename, table in (("cost_module.csv", module_table(records)), ("cost_model.csv", model_table(records))):
                if not table.empty:
                    write_csv_atomic(args.out / filename, table)
                    written.append(str(args.out / filename))
    except FolderLockedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    wanted = {job.key for job in jobs}
    failed = [r for r in records if r.get("key") in wanted and r.get("status") == "error"]
    refused = [r for r in records if r.get("key") in wanted and r.get("status") == "refused"]
    print(
        f"cost: {measured} measured, {skipped} resumed from {args.out / 'cost_records.jsonl'}, "
        f"{len(failed)} with status error, {len(refused)} refused by build_model; "
        f"wrote {', '.join(written) or 'nothing'}",
        file=sys.stderr,
    )
    for record in failed[:20]:
        print(f"  error {record['key']}: {record.get('message', '')}", file=sys.stderr)
    return 0
