"""``python -m suite STAGE [options]`` (or ``attnbench STAGE`` once installed): the harness's command line.

Each stage lives in its own module exposing ``add_arguments(parser)`` and ``main(args) -> int``,
and ``SETTINGS``, the dataclass its flags are made from (:mod:`suite.options`); a stage module is
imported only when chosen, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

STAGES: dict[str, tuple[str, str]] = {
    "cost": ("suite.cost.cli", "parameters, MACs and FLOPs from fvcore, thop, torch and the closed forms"),
    "latency": ("suite.timing.cli_latency", "CPU/CUDA latency with percentiles, ratios and a roofline"),
    "memory": ("suite.timing.cli_memory", "bytes saved for backward, peak RSS / CUDA peak memory"),
    "accuracy": ("suite.accuracy.cli", "ImageNet-subset accuracy deltas with paired seeds"),
    "bench": ("suite.bench.cli", "every stage of a profile, then the report (what nox -s bench runs)"),
    "report": ("suite.report.cli", "tables, figures and README re-rendered from a profile's raw outputs"),
    "regress": ("suite.regress.cli", "regression gate: same-process latency ratios or instruction counts against a committed baseline"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="attnbench" if Path(sys.argv[0]).name == "attnbench" else "python -m suite",
        description="attnbench: measure what CNN attention blocks cost and buy.",
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    chosen = argv[0] if argv else None
    for name, (module_path, help_text) in STAGES.items():
        stage_parser = sub.add_parser(name, help=help_text, description=help_text)
        stage_parser.set_defaults(_module=module_path)
        if name == chosen:
            importlib.import_module(module_path).add_arguments(stage_parser)
    args = parser.parse_args(argv)
    from .plugins import load_plugins_from_env

    load_plugins_from_env()  # the user's $ATTNBENCH_PLUGINS, before any name is resolved
    module = importlib.import_module(args._module)
    settings_class = getattr(module, "SETTINGS", None)
    if settings_class is not None:
        try:  # the checks across fields (a dataclass's __post_init__), before any work
            settings_class(**{name: getattr(args, name) for name in settings_class.__dataclass_fields__})
        except ValueError as exc:
            sub.choices[args.stage].error(str(exc))
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
