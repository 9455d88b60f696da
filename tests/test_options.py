"""Every command's flags come from its settings dataclass: one spelling and one meaning per idea,
each default stated once, and a bad profile or ``--set`` refused before any work starts."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import pytest

from suite.__main__ import main as suite_main
from suite.options import (
    FLAGS_BEGIN,
    FLAGS_END,
    SHARED,
    Option,
    SettingsError,
    add_options,
    command_settings,
    flags_table,
    from_mapping,
    options_of,
    setting,
    to_argv,
)
from suite.readme_blocks import FLAGS_PAGE, replace_block
from suite.stages import COMMANDS

RETIRED = ("--fresh", "--sizes", "--image-size", "--batch-size", "--resolution", "--import", "--dir")
"""Spellings that once named an idea another flag names now."""


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command)
    COMMANDS[command].command_module().add_arguments(parser)
    return parser


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [action.option_strings[0] for action in parser._actions
            if action.option_strings and action.option_strings[0] != "-h"]


def _positionals(parser: argparse.ArgumentParser) -> list[str]:
    """The fields a command takes as positional arguments (compare's folders A and B)."""
    return [action.dest for action in parser._actions if not action.option_strings]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_is_a_field_of_the_command_settings(command: str) -> None:
    settings_class = command_settings()[command]
    declared = [option.flag for _, option in options_of(settings_class)]
    assert len(declared) == len(set(declared)), f"{command}: a flag declared twice: {sorted(declared)}"
    parser = _parser(command)
    fields = [f.name for f in dataclasses.fields(settings_class) if f.name not in _positionals(parser)]
    assert fields == [f.name for f, _ in options_of(settings_class)], f"{command}: a field without a flag"
    assert sorted(_flags(parser)) == sorted(declared)
    parsed, defaults = vars(parser.parse_args([])), settings_class()
    for f, _ in options_of(settings_class):
        assert parsed[f.name] == getattr(defaults, f.name), (command, f.name)


def test_a_flag_of_several_commands_is_one_shared_idea() -> None:
    """The same spelling means the same thing everywhere: same help, kind and parser; a command
    states only its own default (and may narrow the choices)."""
    by_flag: dict[str, list[tuple[str, Option]]] = {}
    for command, settings_class in command_settings().items():
        for _, option in options_of(settings_class):
            by_flag.setdefault(option.flag, []).append((command, option))
    shared = {flag: uses for flag, uses in by_flag.items() if len(uses) > 1}
    assert {"--attn", "--threads", "--out", "--size", "--batch", "--force", "--preset", "--mode"} <= set(shared)
    for flag, uses in shared.items():
        first = uses[0][1]
        for command, option in uses[1:]:
            assert (option.help, option.kind, option.group, option.parse) == (
                first.help, first.kind, first.group, first.parse), f"{flag}: {uses[0][0]} and {command} differ"


def test_no_help_text_states_a_default() -> None:
    """Defaults live in the fields; ``--help`` writes them, so a help text that states one
    would be a second place that can drift."""
    for command, settings_class in command_settings().items():
        for _, option in options_of(settings_class):
            text = option.help.lower()
            assert "(default" not in text and "default:" not in text, f"{command} {option.flag}: {option.help}"


def test_one_spelling_per_idea() -> None:
    every = {option.flag for cls in command_settings().values() for _, option in options_of(cls)}
    assert not every & set(RETIRED), sorted(every & set(RETIRED))
    profile_users = [c for c, cls in command_settings().items()
                     if any(o.flag == "--profile" for _, o in options_of(cls))]
    assert profile_users == ["bench", "report"]  # a stage's named defaults are its --preset


def test_a_test_of_this_kind_fails_on_a_flag_declared_twice() -> None:
    @dataclasses.dataclass
    class Twice:
        threads: int = setting("--threads", 1)
        workers: int = setting("--threads", 2)

    with pytest.raises(argparse.ArgumentError, match="conflicting option string"):
        add_options(argparse.ArgumentParser(), Twice)


def test_help_writes_the_default_from_the_field() -> None:
    @dataclasses.dataclass
    class Example:
        size: tuple[int, ...] = setting("--size", (56, 28))
        threads: int | None = setting("--threads", None, default_text="the cores")

    parser = argparse.ArgumentParser()
    add_options(parser, Example)
    text = " ".join(parser.format_help().split())
    assert "(default: 56,28)" in text and "(default: the cores)" in text
    assert parser.parse_args(["--size", "7"]).size == (7,)


def test_from_mapping_reads_toml_values_like_the_command_line() -> None:
    from suite.timing.cli_latency import LatencySettings

    settings = from_mapping(LatencySettings, {"batch": [1, 8], "size": 28, "budget-s": "0.5", "no_roofline": True},
                            "here")
    assert (settings.batch, settings.size, settings.budget_s, settings.no_roofline) == ((1, 8), (28,), 0.5, True)
    parsed = _parser("latency").parse_args(to_argv(settings))
    assert (parsed.batch, parsed.size, parsed.budget_s, parsed.no_roofline) == ((1, 8), (28,), 0.5, True)
    for bad, message in [({"batch": "-3"}, "here: batch = '-3': must be >= 1"),
                         ({"bogus": 1}, "here: unknown key 'bogus'; accepted: .*warmup-s"),
                         ({"mode": "back"}, "back not one of forward, train"),
                         ({"force": "yes"}, "expected true or false"),
                         ({"rounds": True}, "expected a value")]:
        with pytest.raises(SettingsError, match=message):
            from_mapping(LatencySettings, bad, "here")


@pytest.mark.parametrize("override", ["latency.bogus=1", "latency.batch=-3", "nosuchstage.x=1"])
def test_a_bad_set_exits_2_before_any_work_and_writes_nothing(
        override: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert suite_main(["bench", "--profile", "smoke", "--set", override, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and override.split("=")[0].split(".")[-1] in err
    assert os.listdir(tmp_path) == []
    if override.startswith("nosuchstage"):
        assert "cost, latency, memory, ops, accuracy" in err
    else:
        assert "[[latency]] #0" in err


def test_a_bad_value_on_a_stage_command_line_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert suite_main(["accuracy", "--batch", "8,16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "the accuracy stage takes one value" in err


def test_the_flags_page_lists_every_flag() -> None:
    expected = replace_block(FLAGS_PAGE, FLAGS_BEGIN, FLAGS_END, flags_table())
    assert FLAGS_PAGE.read_text(encoding="utf-8") == expected, (
        "docs/flags.md's flags table is out of date: run python -m suite.options --write")
    for flag in SHARED:
        assert f"`{flag}`" in flags_table()
