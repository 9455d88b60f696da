"""Bench profiles: small TOML files naming what each stage runs.

A profile (``suite/profiles/<name>.toml``, or any path to a ``.toml`` file) has a
``description``, what it is expected to cost (``expected``, a sentence such as "about 70
minutes on a 2-core CPU", and ``expected_minutes``, the number; ``python -m suite bench
--dry-run`` prints the estimate they were written from, :mod:`suite.bench.estimate`), an
``attn`` pattern shared by every stage, and per stage an array of tables
(``[[cost]]``, ``[[latency]]``, ``[[memory]]``, ``[[accuracy]]``): each table is one
invocation of the stage, its keys the stage's flags without the leading dashes. The bench
loads each table into the stage's settings dataclass (``SETTINGS`` of the stage's module, see
:mod:`suite.options`), so every key and value is checked before any stage runs: a value is
what the flag takes (``batch = "1,8"`` or ``batch = [1, 8]``, ``budget-s = 0.5``), a switch is
``true`` or ``false``. A table may set its own ``attn``.

Overrides from the command line (``--set stage.key=value``) replace that key in every
invocation of the stage (``--set latency.1.batch=4`` only in the second one); ``--attn``
replaces the profile's ``attn`` and every table's own.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..stages import measuring_stages

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["PROFILE_DIR", "Profile", "ProfileError", "list_profiles", "load_profile",
           "apply_overrides"]

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"


TOP_KEYS = ("description", "expected", "expected_minutes", "attn")
"""The keys of a profile outside its stage tables."""


class ProfileError(ValueError):
    """A profile that cannot be found or read, or an override that does not apply."""


@dataclass
class Profile:
    """A loaded profile: its name, source file, description, attention pattern and stage runs."""

    name: str
    path: Path
    description: str
    attn: str
    stages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    expected: str = ""
    expected_minutes: float | None = None


def list_profiles() -> list[str]:
    """The names of the profiles shipped in ``suite/profiles``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    """Load a shipped profile by name or a ``.toml`` file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise ProfileError(f"unknown profile {name_or_path!r}; shipped profiles: "
                               f"{', '.join(list_profiles())} (or pass a path to a .toml file)")
    elif not path.exists():
        raise ProfileError(f"profile file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"profile {str(path)!r} is not valid TOML: {exc}") from exc
    order = tuple(measuring_stages())
    unknown = set(data) - {*TOP_KEYS, *order}
    if unknown:
        raise ProfileError(f"profile {str(path)!r}: unknown keys {sorted(unknown)}; "
                           f"accepted: {', '.join(TOP_KEYS)}, {', '.join(order)}")
    stages: dict[str, list[dict[str, Any]]] = {}
    for stage in order:
        runs = data.get(stage, [])
        if isinstance(runs, dict):
            runs = [runs]
        if not all(isinstance(run, dict) for run in runs):
            raise ProfileError(f"profile {str(path)!r}: [{stage}] must be tables ([[{stage}]])")
        if runs:
            stages[stage] = [dict(run) for run in runs]
    return Profile(name=path.stem, path=path, description=str(data.get("description", "")),
                   attn=str(data.get("attn", "*")), stages=stages, expected=str(data.get("expected", "")),
                   expected_minutes=_expected_minutes(data, path))


def _expected_minutes(data: dict[str, Any], path: Path) -> float | None:
    """The profile's ``expected_minutes`` (a positive number), or None when it has none."""
    value = data.get("expected_minutes")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ProfileError(f"profile {str(path)!r}: expected_minutes = {value!r}: expected a positive number")
    return float(value)


def _parse_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return text.strip()


def apply_overrides(profile: Profile, overrides: list[str], attn: str | None = None) -> Profile:
    """A copy of ``profile`` with ``--set stage[.index].key=value`` overrides and ``--attn``."""
    result = copy.deepcopy(profile)
    for item in overrides:
        target, sep, value = item.partition("=")
        parts = target.strip().split(".")
        order = tuple(measuring_stages())
        if not sep or len(parts) not in (2, 3) or parts[0] not in order:
            raise ProfileError(f"--set {item!r}: expected STAGE.KEY=VALUE or STAGE.INDEX.KEY=VALUE "
                               f"with STAGE one of {', '.join(order)}")
        stage, key = parts[0], parts[-1]
        runs = result.stages.setdefault(stage, [{}])
        if len(parts) == 3:
            if not parts[1].isdigit() or int(parts[1]) >= len(runs):
                raise ProfileError(f"--set {item!r}: {stage} has runs 0..{len(runs) - 1} in this profile")
            chosen = [runs[int(parts[1])]]
        else:
            chosen = runs
        for run in chosen:
            run[key] = _parse_value(value)
    if attn is not None:
        result.attn = attn
        for runs in result.stages.values():
            for run in runs:
                run.pop("attn", None)
    return result
