"""Fixtures of the accuracy tests (imported by them): the real Imagenette copy next to the
project, and a session-wide decode cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from suite.accuracy.data import default_data_root, list_classes, load_split


@pytest.fixture(scope="session")
def imagenette_root():
    root = default_data_root()
    if not (root / "train").is_dir():
        pytest.skip(f"Imagenette not found at {root}")
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("attnbench-cache")


def smoke_splits(root, cache_dir, train_per_class: int = 12, val_per_class: int = 4, size: int = 32):
    """A few real Imagenette images per class at ``size`` px (decoded once into ``cache_dir``)."""
    classes = list_classes(root)
    train = load_split(root, "train", classes, size, per_class=train_per_class, cache_dir=cache_dir, workers=1)
    val = load_split(root, "val", classes, size, per_class=val_per_class, cache_dir=cache_dir, workers=1)
    return train, val


@pytest.fixture(scope="session")
def smoke(imagenette_root, cache_dir):
    """``smoke(**kwargs)``: :func:`smoke_splits` on the real Imagenette copy and the test cache."""
    return lambda **kwargs: smoke_splits(imagenette_root, cache_dir, **kwargs)


def image_folder(root: Path, classes: int, train: int = 12, val: int = 4) -> Path:
    """A small decodable ImageFolder: ``classes`` classes of random 24 x 24 PNGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(classes)
    for split, count in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = (rng.random((24, 24, 3)) * 80 + 60 * c).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root
