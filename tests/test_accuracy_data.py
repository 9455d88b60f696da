"""The accuracy stage's ImageFolder loading and decode cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from suite.accuracy import data as data_mod
from suite.accuracy.data import (
    DATA_ENV,
    DataNotFoundError,
    decode_image,
    default_data_candidates,
    list_classes,
    list_files,
    load_split,
    resolve_data_root,
    select_classes,
)

pytest_plugins = ["accuracy_fixtures"]  # imagenette_root, cache_dir


def _image_folder(root: Path) -> Path:
    """train/{a,b} and val/{a,b}: RGB and grayscale JPEGs, a PNG, one corrupt file."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                array = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
                Image.fromarray(array).save(folder / f"rgb{i}.jpg")
            Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8), mode="L").save(folder / "gray.jpg")
            Image.fromarray(rng.integers(0, 256, (24, 48, 3), dtype=np.uint8)).save(folder / "wide.png")
            (folder / "notes.txt").write_text("not an image")
    (root / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def test_missing_default_and_missing_data_name_both(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError) as error:
        resolve_data_root(None)
    assert "nowhere" in str(error.value) and "--data" in str(error.value) and DATA_ENV in str(error.value)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        resolve_data_root(tmp_path / "also-missing")
    (tmp_path / "half" / "train").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="missing val/"):
        resolve_data_root(tmp_path / "half")


def test_default_is_the_shared_imagenette_next_to_the_project(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    checkout, here = default_data_candidates()
    assert checkout == (data_mod.PROJECT_ROOT / ".." / "shared" / "datasets" / "imagenette").resolve()
    assert here == (tmp_path / ".." / "shared" / "datasets" / "imagenette").resolve()
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "mine"))
    assert default_data_candidates() == [(tmp_path / "mine").resolve()]


def test_class_selection():
    available = ["c", "a", "b", "d"]
    assert select_classes(available) == ["a", "b", "c", "d"]
    assert select_classes(available, num_classes=2) == ["a", "b"]
    assert select_classes(available, classes=["d", "b"]) == ["b", "d"]
    with pytest.raises(ValueError, match="not found"):
        select_classes(available, classes=["zz"])
    with pytest.raises(ValueError, match="num_classes"):
        select_classes(available, num_classes=5)


def test_per_class_sample_is_deterministic_and_stable(tmp_path):
    root = _image_folder(tmp_path)
    full = list_files(root, "train", ["a", "b"])
    assert len(full) == 11  # 6 images in a (one broken), 5 in b; notes.txt ignored
    two = list_files(root, "train", ["a", "b"], per_class=2)
    assert two == list_files(root, "train", ["a", "b"], per_class=2)
    assert [label for _, label in two] == [0, 0, 1, 1]
    assert set(two) <= set(full)
    # adding files never evicts a chosen one unless it sorts before it
    for extra in range(5):
        Image.new("RGB", (8, 8)).save(root / "train" / "a" / f"extra{extra}.jpg")
    again = list_files(root, "train", ["a", "b"], per_class=2)
    assert [p for p in again if p[1] == 1] == [p for p in two if p[1] == 1]


def test_decode_converts_to_rgb_resizes_and_center_crops(tmp_path):
    root = _image_folder(tmp_path)
    gray = decode_image(root / "train" / "a" / "gray.jpg", 16)
    assert gray.shape == (16, 16, 3) and gray.dtype == np.uint8
    assert np.array_equal(gray[..., 0], gray[..., 1])
    wide = decode_image(root / "train" / "a" / "wide.png", 12)
    assert wide.shape == (12, 12, 3)
    source = np.asarray(Image.open(root / "train" / "a" / "wide.png").resize((24, 12), Image.Resampling.BILINEAR))
    assert np.array_equal(wide, source[:, 6:18])  # shorter side to 12, centre 12 columns
    assert decode_image(root / "train" / "a" / "broken.jpg", 16) is None


def test_load_split_skips_unreadable_files_and_caches(tmp_path):
    root = _image_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    first = load_split(root, "train", list_classes(root), 16, cache_dir=cache, workers=1)
    assert first.skipped == ["train/a/broken.jpg"]
    assert len(first) == 10 and first.images.shape == (10, 16, 16, 3)
    assert first.labels.tolist() == [0] * 5 + [1] * 5
    assert not first.from_cache and first.cache_file.exists()
    second = load_split(root, "train", list_classes(root), 16, cache_dir=cache, workers=1)
    assert second.from_cache and second.skipped == first.skipped
    assert torch.equal(second.images, first.images) and torch.equal(second.labels, first.labels)
    # another resolution, or a changed file, is another cache entry
    other = load_split(root, "train", list_classes(root), 8, cache_dir=cache, workers=1)
    assert not other.from_cache and other.cache_file != first.cache_file
    target = root / "train" / "b" / "rgb0.jpg"  # index 6: a has 5 readable files, b sorts gray.jpg first
    Image.new("RGB", (50, 50), (255, 0, 0)).save(target)
    os.utime(target, ns=(1, 1))
    changed = load_split(root, "train", list_classes(root), 16, cache_dir=cache, workers=1)
    assert not changed.from_cache and changed.cache_file != first.cache_file
    assert (changed.images[6].float().mean((0, 1)) - torch.tensor([255.0, 0, 0])).abs().max() < 3


def test_parallel_decode_equals_serial(tmp_path):
    root = _image_folder(tmp_path / "data")
    for i in range(70):  # enough files for the process pool
        Image.fromarray(np.full((20, 20, 3), i, np.uint8)).save(root / "val" / "a" / f"flat{i:02d}.png")
    serial = load_split(root, "val", ["a", "b"], 10, cache_dir=tmp_path / "c1", workers=1)
    parallel = load_split(root, "val", ["a", "b"], 10, cache_dir=tmp_path / "c2", workers=2)
    assert torch.equal(serial.images, parallel.images) and torch.equal(serial.labels, parallel.labels)


def test_real_imagenette_subset(imagenette_root, cache_dir):
    classes = list_classes(imagenette_root)
    assert len(classes) == 10
    val = load_split(imagenette_root, "val", classes, 24, per_class=2, cache_dir=cache_dir)
    assert val.images.shape == (20, 24, 24, 3) and val.skipped == []
    assert val.labels.tolist() == [i // 2 for i in range(20)]
    assert val.images.float().std() > 20  # real pictures, not blank
