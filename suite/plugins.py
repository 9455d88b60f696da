"""Bring your own module: load user attention classes into the registry by name.

A plugin spec is one of

* ``package.module:ClassName`` — import the class and register it as ``classname`` (lower
  case), kind ``gate``, family ``plugin``; its docstring's first line becomes the paper title;
* ``name=package.module:ClassName`` — the same under the name ``name``;
* ``package.module`` — import the module only: it registers its own entries with
  :func:`modules.register_attention` (full control over kind, placement and metadata).

In each form the module may also be a Python file, ``path/to/file.py`` (made absolute, so
child processes started elsewhere find it too).

The class is called as ``ClassName(channels, **kwargs)`` and must return an ``nn.Module``
whose forward takes ``(N, C, H, W)``. Closed forms (``formula_macs`` etc., see
:class:`modules.AttentionModule`) are optional: without them the cost stage leaves the
``macs_formula`` column empty for that type, and every other measurement still runs.

The bench passes its plugins to every stage, and to the fresh processes the latency and memory
stages start, through the environment variable :data:`PLUGINS_ENV` (specs separated by ``;``).
They are loaded where they are asked for, never on import: by ``python -m suite`` (the command
line) and by the entry points of those worker processes, each calling :func:`load_plugins_from_env`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

__all__ = ["PLUGINS_ENV", "PluginError", "Plugin", "parse_spec", "normalize_spec", "load_plugin", "load_plugins",
           "load_plugins_from_env", "export_plugins"]

PLUGINS_ENV = "ATTNBENCH_PLUGINS"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


class PluginError(ValueError):
    """A plugin spec that cannot be parsed, imported or registered."""


@dataclass(frozen=True)
class Plugin:
    """A parsed spec: the module to import, the class (or None) and the name given in the spec
    (or None: the class's name in lower case)."""

    module: str
    class_name: str | None
    given_name: str | None = None

    @property
    def name(self) -> str | None:
        """The registry name."""
        return self.given_name or (self.class_name.lower() if self.class_name else None)

    def as_spec(self) -> str:
        """The spec this plugin is parsed from (``[name=]module[:ClassName]``)."""
        named = f"{self.given_name}=" if self.given_name else ""
        return f"{named}{self.module}" + (f":{self.class_name}" if self.class_name else "")


def parse_spec(spec: str) -> Plugin:
    """Parse ``[name=]package.module[:ClassName]``; raise :class:`PluginError` when malformed."""
    text = spec.strip()
    name = None
    if "=" in text:
        name, text = (part.strip() for part in text.split("=", 1))
        if not _NAME.match(name):
            raise PluginError(f"plugin {spec!r}: the name {name!r} is not a valid attention name")
    module, sep, class_name = text.rpartition(":")
    if not sep:
        module, class_name = text, ""
    if module.endswith(".py"):
        module = str(Path(module).resolve())
    elif not all(part.isidentifier() for part in module.split(".")):
        raise PluginError(
            f"plugin {spec!r}: expected 'package.module:ClassName', 'name=package.module:ClassName', "
            "'package.module', or a path/to/file.py in place of package.module"
        )
    if class_name and not class_name.isidentifier():
        raise PluginError(f"plugin {spec!r}: {class_name!r} is not a class name")
    if name and not class_name:
        raise PluginError(f"plugin {spec!r}: a name needs a class ('name=package.module:ClassName')")
    return Plugin(module=module, class_name=class_name or None, given_name=name)


def normalize_spec(spec: str) -> str:
    """``spec`` with a ``.py`` file made absolute, so that a process started elsewhere loads it too."""
    return parse_spec(spec).as_spec()


def load_plugin(spec: str) -> list[str]:
    """Import and register one plugin; return the attention names it added.

    Loading the same spec twice is harmless (the second call registers nothing)."""
    import modules

    plugin = parse_spec(spec)
    before = set(modules.list_attention())
    try:
        imported = _import(plugin.module)
    except (ImportError, OSError) as exc:
        raise PluginError(f"plugin {spec!r}: cannot import {plugin.module!r}: {exc}") from exc
    if plugin.class_name is None:
        return sorted(set(modules.list_attention()) - before)
    cls = getattr(imported, plugin.class_name, None)
    if cls is None or not inspect.isclass(cls):
        raise PluginError(f"plugin {spec!r}: {plugin.module!r} has no class {plugin.class_name!r}")
    assert plugin.name is not None
    if plugin.name in before:
        existing = modules.get_info(plugin.name)
        if existing.family == "plugin" and existing.factory is cls:
            return []
        raise PluginError(f"plugin {spec!r}: the name {plugin.name!r} is already registered "
                          f"(family {existing.family!r}); give it another with 'name={spec}'")
    doc = inspect.getdoc(cls) or ""
    modules.register_attention(
        plugin.name, cls, family="plugin", paper=doc.splitlines()[0] if doc else plugin.class_name,
        arxiv=None, kind="gate", description=f"plugin {plugin.module}:{plugin.class_name}",
    )
    return [plugin.name]


def _import(module: str) -> ModuleType:
    """Import a dotted module name, or a ``.py`` file (once: a second call returns the same module)."""
    if not module.endswith(".py"):
        return importlib.import_module(module)
    path = Path(module)
    name = f"_attnbench_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise ImportError(f"no Python file at {path}")
    imported = importlib.util.module_from_spec(spec)
    sys.modules[name] = imported
    try:
        spec.loader.exec_module(imported)
    except BaseException:
        del sys.modules[name]
        raise
    return imported


def load_plugins(specs: Iterable[str]) -> list[str]:
    """Load several specs in order; return every name they added."""
    names: list[str] = []
    for spec in specs:
        names.extend(load_plugin(spec))
    return names


def export_plugins(specs: Iterable[str]) -> None:
    """Put ``specs`` in :data:`PLUGINS_ENV` so child processes load them too."""
    current = [s for s in os.environ.get(PLUGINS_ENV, "").split(";") if s.strip()]
    for spec in specs:
        if spec not in current:
            current.append(spec)
    os.environ[PLUGINS_ENV] = ";".join(current)


def load_plugins_from_env() -> list[str]:
    """Load the specs in :data:`PLUGINS_ENV` (nothing when unset)."""
    return load_plugins(s for s in os.environ.get(PLUGINS_ENV, "").split(";") if s.strip())
