"""``python -m suite COMMAND [options]`` (or ``attnbench COMMAND`` once installed): the harness's command line.

The commands are the registry's (:data:`suite.stages.COMMANDS`). Each lives in its own module
exposing ``SETTINGS`` (the dataclass its flags are made from, :mod:`suite.options`),
``add_arguments(parser)`` and ``main(settings) -> int``; a command's module is imported only
when chosen, so ``--help`` stays fast. Input a command refuses (:class:`suite.errors.UsageError`,
a bad plugin, a check across fields) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from .errors import USAGE_EXIT, UsageError
from .stages import COMMANDS

__all__ = ["main", "build_parser"]


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    """The parser of every command, with the flags of ``chosen`` (only its module is imported).
    A command whose settings have no ``plugins`` field gets the shared ``--plugin`` here, so that
    every command loads the user's own attention classes the same way."""
    from .options import SHARED

    parser = argparse.ArgumentParser(
        prog="attnbench" if Path(sys.argv[0]).name == "attnbench" else "python -m suite",
        description="attnbench: measure what CNN attention blocks cost and buy.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, spec in COMMANDS.items():
        command_parser = sub.add_parser(name, help=spec.help, description=spec.help)
        if name != chosen:
            continue
        module = spec.command_module()
        module.add_arguments(command_parser)
        if "plugins" not in {f.name for f in dataclasses.fields(module.SETTINGS)}:
            option = SHARED["--plugin"]
            command_parser.add_argument(option.flag, dest="_plugins", action="append", default=[],
                                        metavar=option.metavar, help=option.help + " (default: none)")
    return parser


def _load_plugins(specs: list[str]) -> None:
    """The user's ``$ATTNBENCH_PLUGINS`` and ``--plugin`` specs, loaded (and exported to child
    processes) before any attention name is resolved; a bad one is a :class:`UsageError`."""
    from .plugins import (
        PLUGINS_ENV,
        PluginError,
        export_plugins,
        load_plugins,
        load_plugins_from_env,
        normalize_spec,
    )

    try:
        load_plugins_from_env()
    except PluginError as exc:
        raise UsageError(f"${PLUGINS_ENV}: {exc}") from None
    try:
        normalized = [normalize_spec(spec) for spec in specs]
        load_plugins(normalized)
    except PluginError as exc:
        raise UsageError(f"--plugin: {exc}") from None
    export_plugins(normalized)


def settings_from(args: argparse.Namespace, settings_class: type) -> Any:
    """The command's settings object from its parsed flags; the checks across fields (the
    dataclass's ``__post_init__``) raise ``ValueError``, a usage error."""
    return settings_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(settings_class)})


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (``sys.argv[1:]`` by default), load the user's plugins and run the chosen
    command's ``main`` on its settings; its exit status, or 2 for refused input."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    module = COMMANDS[args.command].command_module()
    try:
        _load_plugins(getattr(args, "_plugins", []))
        try:
            settings = settings_from(args, module.SETTINGS)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return int(module.main(settings) or 0)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_EXIT


if __name__ == "__main__":
    sys.exit(main())
