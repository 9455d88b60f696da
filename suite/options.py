"""Command settings: one typed dataclass per command owns every default; its flags are made from it.

A settings class is a dataclass whose fields are declared with :func:`setting`: an
:class:`Option` (the flag's spelling, how its text is parsed and checked, its help) and this
command's default. An idea that several commands share (the attention pattern, threads, the
output folder, the batch sizes...) is one :class:`Option` in :data:`SHARED`, so it has one
spelling, one parser and one help text everywhere; each command states only its own default.

From a settings class:

* :func:`add_options` makes the argparse flags; every help text ends with the default, written
  from the field (so the help cannot drift from the default);
* :func:`from_mapping` loads a profile table (TOML values) with the same parsers and checks,
  naming the table, the key and what is accepted when something is wrong;
* :func:`to_argv` writes the command line that reproduces a settings object.

The model is asv's shared ``common_args`` and pytest-benchmark's option groups: the flags of a
command are data, declared once, and every entry point reads them from there.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .shard import parse_shard

__all__ = [
    "Option", "SettingsError", "SHARED", "setting", "options_of", "add_options", "from_mapping",
    "to_argv", "command_settings", "flags_table", "FLAGS_BEGIN", "FLAGS_END", "positive_int", "non_negative_int", "positive_float", "non_negative_float",
    "positive_int_list", "choice_list", "comma_list",
]


class SettingsError(ValueError):
    """A settings value or key that a command does not accept (the message says what is accepted)."""


# --- parsers: text of the command line (or a profile value) to a typed value --------------------

def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(text)
    if value < 1:
        raise ValueError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = int(text)
    if value < 0:
        raise ValueError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number > 0."""
    value = float(text)
    if not value > 0:
        raise ValueError(f"must be > 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """A number >= 0."""
    value = float(text)
    if not value >= 0:
        raise ValueError(f"must be >= 0, got {value}")
    return value


def positive_int_list(text: str) -> tuple[int, ...]:
    """Comma-separated integers >= 1 (``"1,8,32"``)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError("expected one or more integers, comma-separated")
    return tuple(positive_int(p) for p in parts)


def comma_list(text: str) -> tuple[str, ...]:
    """Comma-separated names (``"resnet18,resnet50"``), at least one."""
    parts = tuple(p.strip() for p in str(text).split(",") if p.strip())
    if not parts:
        raise ValueError("expected one or more names, comma-separated")
    return parts


def choice_list(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """A parser of comma-separated values, each one of ``choices``."""
    def parse(text: str) -> tuple[str, ...]:
        values = comma_list(text)
        bad = [v for v in values if v not in choices]
        if bad:
            raise ValueError(f"{', '.join(bad)} not one of {', '.join(choices)}")
        return values

    parse.__name__ = "list of " + "/".join(choices)
    return parse


# --- options --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """One flag: its spelling, how its text is read, and what it means.

    ``kind``: ``value`` (``--flag VALUE``), ``switch`` (a bare ``--flag``, default off),
    ``toggle`` (``--flag`` / ``--no-flag``) or ``append`` (repeatable, a list)."""

    flag: str
    help: str
    parse: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    kind: str = "value"
    group: str = "options"

    def read(self, value: Any) -> Any:
        """A value of this option from its text or a TOML value (``ValueError`` when not accepted)."""
        if self.kind in ("switch", "toggle"):
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if self.kind == "append":
            return [self._read_one(v) for v in (value if isinstance(value, list) else [value])]
        return self._read_one(",".join(map(str, value)) if isinstance(value, list) else value)

    def _read_one(self, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected a value, got {str(value).lower()}")
        text = str(value)
        if self.choices is not None and text not in self.choices:
            raise ValueError(f"not one of {', '.join(self.choices)}")
        return self.parse(text) if self.parse is not None else text


SHARED: dict[str, Option] = {option.flag: option for option in (
    Option("--attn", "attention types: fnmatch pattern(s) over the registered names, comma-separated "
           "(e.g. 'se,eca*'); a pattern that matches nothing stops the run before anything is measured "
           "and lists the registered names", metavar="PATTERN", group="what to measure"),
    Option("--level", "'module': the attention block alone on an input of the grid's shapes; 'model': "
           "modules.build_model(ARCH, attn=NAME) against the same backbone without attention",
           choices=("module", "model"), group="what to measure"),
    Option("--arch", "backbone(s) for the model level, comma-separated, from modules.list_archs()",
           parse=comma_list, metavar="ARCH[,ARCH...]", group="what to measure"),
    Option("--batch", "batch sizes, comma-separated", parse=positive_int_list, metavar="N[,N...]",
           group="what to measure"),
    Option("--size", "input sizes S (the input is S x S), comma-separated", parse=positive_int_list,
           metavar="S[,S...]", group="what to measure"),
    Option("--channels", "module level: input channels, comma-separated", parse=positive_int_list,
           metavar="C[,C...]", group="what to measure"),
    Option("--device", "'cpu' or 'cuda[:i]'", metavar="DEVICE", group="what to measure"),
    Option("--threads", "torch intra-op threads, set and recorded", parse=positive_int, metavar="N",
           group="what to measure"),
    Option("--preset", "a named set of the stage's defaults, sized for a machine: cpu (2 cores), gpu (one CUDA "
           "device); the accuracy stage also has smoke (seconds, for tests)", group="what to measure"),
    Option("--profile", "a bench profile: a shipped name (suite/profiles/) or a path to a .toml file; the report "
           "names it in titles", metavar="NAME", group="what to measure"),
    Option("--budget-s", "sampling time in seconds (what it covers: see the default)", parse=positive_float,
           metavar="S", group="timing"),
    Option("--isolation", "how each measurement gets a fresh process: forked from a server that imported torch and "
           "the zoo and ran nothing (fast), or a new interpreter (seconds of imports each)", group="processes"),
    Option("--out", "output folder: raw records (the run's environment written once, in environments.jsonl) and tidy CSVs; locked while a run "
           "writes it", parse=Path, metavar="DIR", group="output"),
    Option("--force", "measure again what the records in --out already hold", kind="switch", group="output"),
    Option("--dry-run", "list what would be measured and exit without measuring", kind="switch", group="output"),
    Option("--no-progress", "no progress bar on stderr", kind="switch", group="output"),
    Option("--tables-only", "rewrite the tidy CSVs in --out from its records and exit, measuring nothing (after an "
           "upgrade of the suite, for instance)", kind="switch", group="output"),
    Option("--plugin", "your own attention class: package.module:ClassName, name=package.module:ClassName, or "
           "package.module that registers its own types; a path/to/file.py may stand for package.module "
           "(repeatable)", kind="append", metavar="SPEC", group="what to measure"),
    Option("--rounds", "rounds per configuration, each in a fresh worker process (regress --against: each side's, "
           "the side that goes first alternating); the 95% intervals come from the rounds", parse=positive_int,
           metavar="N", group="processes"),
    Option("--timeout-s", "give up on one configuration's process after this many seconds (status timeout)",
           parse=positive_float, metavar="S", group="processes"),
    Option("--cudnn-benchmark", "torch.backends.cudnn.benchmark during CUDA runs (set explicitly, recorded, "
           "restored)", choices=("on", "off"), group="CUDA"),
    Option("--tf32", "TF32 during CUDA runs (set explicitly, recorded per row, restored): 'default' is PyTorch's "
           "own (IEEE fp32 matmuls, TF32 cuDNN convolutions, what users get), 'on' TF32 for both, 'off' IEEE for "
           "both", choices=("default", "on", "off"), group="CUDA"),
    Option("--shard", "measure part K of N of the plan (every N-th configuration from the K-th, the same on every "
           "machine): run the parts on separate GPUs or nodes, then join their folders with python -m suite merge",
           parse=parse_shard, metavar="K/N", group="processes"),
)}
"""The options several commands share, by flag: one spelling, parser and help for each idea."""


def setting(option: Option | str, default: Any = None, *, default_text: str | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field for ``option`` (an :class:`Option`, or a flag of :data:`SHARED`) with this
    command's ``default``. ``default_text``: how ``--help`` states a default that is resolved later
    (``None`` meaning "per device", for instance). ``choices``: a command's narrower choices of a
    shared option (the cost stage also has ``--level both``)."""
    spec = SHARED[option] if isinstance(option, str) else option
    if choices is not None:
        spec = dataclasses.replace(spec, choices=choices)
    metadata = {"option": spec, "default_text": default_text}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def options_of(settings_class: type) -> list[tuple[dataclasses.Field[Any], Option]]:
    """The fields of a settings class with their options, in declaration order."""
    return [(f, f.metadata["option"]) for f in dataclasses.fields(settings_class) if "option" in f.metadata]


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def default_text(f: dataclasses.Field[Any]) -> str:
    """How ``--help`` states the default of a field."""
    if f.metadata.get("default_text"):
        return str(f.metadata["default_text"])
    value = _default_of(f)
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if value else "none"
    return "none" if value is None else str(value)


def add_options(parser: argparse.ArgumentParser, settings_class: type) -> None:
    """Add a flag for every field of ``settings_class`` to ``parser``, grouped by the options'
    groups; a value's text goes through the option's parser, so the command line and a profile
    accept exactly the same values."""
    groups: dict[str, Any] = {}
    for f, option in options_of(settings_class):
        group = groups.get(option.group) or groups.setdefault(option.group, parser.add_argument_group(option.group))
        kwargs: dict[str, Any] = {"dest": f.name, "default": _default_of(f)}
        shown = option.help.replace("%", "%%")
        if option.kind == "switch":
            kwargs["action"] = "store_true"
        elif option.kind == "toggle":
            kwargs["action"] = argparse.BooleanOptionalAction
            shown += f" (default: {default_text(f)})"
        else:
            kwargs["type"] = _argparse_type(option)
            kwargs["metavar"] = option.metavar or ("{" + ",".join(option.choices) + "}" if option.choices else None)
            if option.kind == "append":
                kwargs["action"] = "append"
                kwargs["type"] = _argparse_type(dataclasses.replace(option, kind="value"))
            shown += f" (default: {default_text(f)})".replace("%", "%%")
        kwargs["help"] = shown
        group.add_argument(option.flag, **kwargs)


def _argparse_type(option: Option) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return option.read(text)
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

    parse.__name__ = option.flag
    return parse


def from_mapping(settings_class: type, values: dict[str, Any], where: str) -> Any:
    """A ``settings_class`` object from a profile table: keys are flags without the dashes
    (``budget-s``, or ``budget_s``). An unknown key or a value the option does not accept is a
    :class:`SettingsError` naming ``where``, the key and what is accepted."""
    by_key = {option.flag[2:]: (f, option) for f, option in options_of(settings_class)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        entry = by_key.get(str(key).replace("_", "-"))
        if entry is None:
            raise SettingsError(f"{where}: unknown key {key!r}; accepted: {', '.join(sorted(by_key))}")
        f, option = entry
        if value is None:
            continue
        try:
            kwargs[f.name] = option.read(value)
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{where}: {key} = {value!r}: {exc}") from None
    return settings_class(**kwargs)


def to_argv(settings: Any) -> list[str]:
    """The flags that reproduce ``settings`` (only values that differ from the defaults)."""
    argv: list[str] = []
    for f, option in options_of(type(settings)):
        value = getattr(settings, f.name)
        if value == _default_of(f):
            continue
        if option.kind == "switch":
            argv += [option.flag] if value else []
        elif option.kind == "toggle":
            argv.append(option.flag if value else "--no-" + option.flag[2:])
        elif option.kind == "append":
            for item in value:
                argv += [option.flag, _text(item)]
        elif value is not None:
            argv += [option.flag, _text(value)]
    return argv


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


FLAGS_BEGIN = "<!-- flags:begin (generated by python -m suite.options --write) -->"
FLAGS_END = "<!-- flags:end -->"


def command_settings() -> dict[str, type]:
    """Every command of ``python -m suite`` with its settings class."""
    from .stages import COMMANDS

    return {name: spec.command_module().SETTINGS for name, spec in COMMANDS.items()}


def flags_table(commands: dict[str, type] | None = None) -> str:
    """The table of every flag (``docs/flags.md``): its spelling, the commands that take it with
    their defaults, and what it means (the shared ones first)."""
    commands = command_settings() if commands is None else commands
    uses: dict[str, list[str]] = {}
    meaning: dict[str, str] = {}
    for command, settings_class in commands.items():
        for f, option in options_of(settings_class):
            shown = "" if option.kind == "switch" else f" ({default_text(f)})"
            uses.setdefault(option.flag, []).append(f"{command}{shown}")
            meaning.setdefault(option.flag, option.help)
    order = sorted(uses, key=lambda flag: (flag not in SHARED, flag))
    lines = ["| flag | commands (default) | meaning |", "| --- | --- | --- |"]
    for flag in order:
        cells = [f"`{flag}`", "; ".join(uses[flag]), meaning[flag]]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m suite.options [--write | --check]``: print the flags table, write it into
    ``docs/flags.md``, or check that the page's table is current."""
    from .readme_blocks import FLAGS_PAGE, block_command

    return block_command(argv, "python -m suite.options", "the table of every flag of every command",
                         FLAGS_PAGE, FLAGS_BEGIN, FLAGS_END, flags_table)


if __name__ == "__main__":
    raise SystemExit(main())
