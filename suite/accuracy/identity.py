"""What makes two accuracy runs comparable, and the per-image results kept beside each run.

Two runs are paired only when everything that decides their scores, other than the design
and the seed, is the same: the recipe (its fingerprint), the data (:func:`data_identity` of
both splits: file lists, labels, sizes), the effective precision (bf16 autocast or fp32), the
intra-op thread count, the number of ``torchrun`` processes (each normalises over its own part
of the global batch, so batch-norm statistics depend on it) and the version of the code that
trains and builds the networks (:func:`code_version`), and the design's own source
(:func:`design_code_version`, in the key only: a design changed since is trained again). All of
it is in the run key (:func:`run_context`) and in the record (:data:`IDENTITY_FIELDS`), and
:func:`same_comparison` selects the records of one comparison.

Per-image results: for every finished run, one line of ``per_image.jsonl`` with, in the order
of the val split's files (listed once per data identity in ``val_images-<id>.json``), whether
top-1 and top-5 were right and the image's loss.

Width-matched arms: ``matched_<design>`` (:func:`matched_name`) names the backbone without
attention, widened until its training step takes as long as the design's
(:mod:`suite.accuracy.matched`); its runs pair with the baseline's seeds like a design's, and
their key names the widths trained.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["IDENTITY_FIELDS", "ABSENT_FIELDS", "MATCHED_PREFIX", "code_version", "design_code_version",
           "matched_name", "matched_design", "run_identity", "run_context", "same_comparison", "per_image_line",
           "val_manifest_name"]

IDENTITY_FIELDS = ("recipe", "data_id", "precision", "threads", "world_size", "code_version")
"""Record fields that must be equal for two runs to be paired."""

ABSENT_FIELDS = {"world_size": 1}
"""The value an identity field counts as in a record written before the field existed."""

_PACKAGE_PARENT = Path(__file__).resolve().parents[2]
SHARED_CODE = ("suite/accuracy/train.py", "suite/accuracy/augment.py", "suite/accuracy/data.py",
               "modules/_base.py", "modules/_registry.py", "modules/backbones.py", "modules/small_resnet.py")
"""The code every run of a comparison shares: training, augmentation, decoding, the backbones
and the zoo's contract (recipe values are in the recipe fingerprint)."""


MATCHED_PREFIX = "matched_"
"""What the name of a width-matched arm starts with, before the design it matches."""


def matched_name(design: str) -> str:
    """The name of the arm matched to ``design`` in the records and tables (``matched_se``)."""
    return MATCHED_PREFIX + design


def matched_design(name: str) -> str | None:
    """The design a width-matched arm's ``name`` matches (``se`` for ``matched_se``); None for
    any other name."""
    text = str(name)
    return text[len(MATCHED_PREFIX):] if text.startswith(MATCHED_PREFIX) and len(text) > len(MATCHED_PREFIX) else None


def _code_hash(source: str) -> str:
    """A hash of Python source without its docstrings and comments (its AST), so editing prose
    does not re-key the runs."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def code_version() -> str:
    """A hash of :data:`SHARED_CODE` (docstrings and comments left out): runs are paired only
    when it is equal."""
    digest = hashlib.sha256()
    for name in SHARED_CODE:
        path = _PACKAGE_PARENT / name
        digest.update(name.encode() + b"\0" + (_code_hash(path.read_text()) if path.is_file() else "-").encode())
    return digest.hexdigest()[:12]


def design_code_version(attn: str) -> str:
    """A hash of the source file that defines ``attn``'s module (a plugin's file too), kept in
    the run's key: a changed design is trained again, its baseline is not. ``-`` for the
    baseline and for a width-matched arm, which hold no attention (the key of a matched run
    names its widths instead)."""
    import inspect

    import modules

    if attn == "none" or matched_design(attn) is not None:
        return "-"
    try:
        path = inspect.getsourcefile(modules.get_info(attn).factory)
        return _code_hash(Path(path).read_text())[:12] if path else "-"
    except (TypeError, OSError, ValueError, SyntaxError):
        return "-"


def run_identity(recipe_fingerprint: str, train_identity: str, val_identity: str, bf16: bool,
                 threads: int, world_size: int = 1) -> dict[str, Any]:
    """The :data:`IDENTITY_FIELDS` of the runs of one sweep (``world_size``: its processes)."""
    return {"recipe": recipe_fingerprint, "data_id": f"{train_identity}-{val_identity}",
            "precision": "bf16" if bf16 else "fp32", "threads": int(threads), "world_size": int(world_size),
            "code_version": code_version()}


def run_context(arch: str, data_name: str, identity: Mapping[str, Any]) -> str:
    """The part of a run's key that every run of one comparison shares: the backbone, the data
    folder's name and :func:`run_identity`'s fields. The process count is named only when it is
    above 1 (``|world=N``), so a single-process run keeps the key it had before the count was
    part of the identity and its records still resume."""
    context = (f"{arch}|{data_name}|{identity['recipe']}|data={identity['data_id']}|{identity['precision']}|"
               f"threads={identity['threads']}|code={identity['code_version']}")
    world = int(identity.get("world_size", 1))
    return context + (f"|world={world}" if world > 1 else "")


def same_comparison(records: Iterable[Mapping[str, Any]], identity: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The records whose identity fields equal ``identity``'s (a field a record lacks, or holds
    as ``None``, counts as its :data:`ABSENT_FIELDS` value, else ``None``, so records written
    before a field existed pair only with each other)."""
    wanted = {k: _identity_field(identity, k) for k in IDENTITY_FIELDS}
    return [dict(r) for r in records if all(_identity_field(r, k) == v for k, v in wanted.items())]


def _identity_field(record: Mapping[str, Any], name: str) -> Any:
    """``record[name]``, or :data:`ABSENT_FIELDS`' value for it where it is absent or None."""
    value = record.get(name)
    return ABSENT_FIELDS.get(name) if value is None else value


def per_image_line(key: str, attn: str, seed: int, per_image: Mapping[str, list], val_identity: str) -> dict[str, Any]:
    """One run's per-image results as a compact record: ``correct`` and ``top5`` as strings of
    0/1 (one character per val image), ``loss`` rounded to 5 decimals."""
    return {"key": key, "attn": attn, "seed": seed, "val_id": val_identity,
            "correct": "".join("1" if c else "0" for c in per_image["correct"]),
            "top5": "".join("1" if c else "0" for c in per_image["top5"]),
            "loss": [round(float(v), 5) for v in per_image["loss"]]}


def val_manifest_name(val_identity: str) -> str:
    """The file, beside the records, listing the val images a per-image line refers to."""
    return f"val_images-{val_identity}.json"
