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
    data_identity,
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


def _png(path: Path, value: int = 128, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full((20, 24), value, dtype=np.uint16)).save(path)
    else:
        Image.new(mode, (24, 20), (value,) * 3 if mode == "RGB" else value).save(path)


def _layout(root: Path, train: dict[str, int], val: dict[str, int]) -> Path:
    for split, counts in (("train", train), ("val", val)):
        for name, n in counts.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _png(root / split / name / f"{i}.png", 40 + 10 * i)
    return root


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path):
    root = _layout(tmp_path / "d", {"a": 2, "b": 0}, {"a": 1, "b": 1})
    with pytest.raises(DataNotFoundError, match=r"train/b holds no image \(accepted: \.jpg"):
        list_files(root, "train", list_classes(root))


def test_an_empty_val_class_is_an_error_naming_it(tmp_path):
    root = _layout(tmp_path / "d", {"a": 2, "b": 2}, {"a": 1, "b": 0})
    with pytest.raises(DataNotFoundError, match=r"val/b holds no image"):
        list_files(root, "val", list_classes(root))


def test_classes_only_in_val_are_an_error_naming_them(tmp_path):
    root = _layout(tmp_path / "d", {"a": 2}, {"a": 1, "zebra": 1})
    with pytest.raises(DataNotFoundError, match="class folders that train/ lacks: zebra"):
        list_classes(root)


def test_images_in_nested_folders_belong_to_their_class(tmp_path):
    """As torchvision's ImageFolder: every image below a class folder has that class's label
    (hidden folders, which ImageFolder reads too, are left out)."""
    from torchvision.datasets import ImageFolder

    root = _layout(tmp_path / "d", {"a": 1, "b": 1}, {"a": 1, "b": 1})
    _png(root / "train" / "b" / "deeper" / "still" / "x.png")
    _png(root / "train" / "b" / ".hidden" / "y.png")
    items = list_files(root, "train", list_classes(root))
    assert items == [("train/a/0.png", 0), ("train/b/0.png", 1), ("train/b/deeper/still/x.png", 1)]
    reference = ImageFolder(str(root / "train"))
    listed = sorted((Path(p).relative_to(root).as_posix(), y) for p, y in reference.samples)
    assert [item for item in listed if "/." not in item[0]] == items


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    """A 16-bit grayscale PNG at half scale (32768) decodes to mid grey, not near-white."""
    path = tmp_path / "gray16.png"
    _png(path, 32768, mode="I;16")
    assert Image.open(path).mode in ("I;16", "I")
    array = decode_image(path, 16)
    assert array.shape == (16, 16, 3)
    assert abs(int(array.mean()) - 128) <= 1


def test_data_identity_follows_the_files_not_the_folder_name(tmp_path):
    two = _layout(tmp_path / "one" / "mini", {"a": 2, "b": 2}, {"a": 1, "b": 1})
    same = _layout(tmp_path / "two" / "mini", {"a": 2, "b": 2}, {"a": 1, "b": 1})
    first = data_identity(two, list_files(two, "train", list_classes(two)))
    assert data_identity(same, list_files(same, "train", list_classes(same))) == first  # same files elsewhere
    _layout(two, {"c": 2}, {"c": 1})  # a third class under the same folder name
    assert data_identity(two, list_files(two, "train", list_classes(two))) != first


def test_imagenette_is_downloaded_into_the_cache_once(tmp_path, monkeypatch):
    """--data imagenette with a stubbed downloader (no network in tests): called once with the
    cache folder, the layout it leaves is the root; a second call does not download again."""
    calls = []

    def fake_download(target: Path) -> None:
        calls.append(target)
        _layout(target / "imagenette2-320", {"n01440764": 1}, {"n01440764": 1})

    monkeypatch.chdir(tmp_path)
    root = resolve_data_root("imagenette", tmp_path / "cache", downloader=fake_download)
    assert root == tmp_path / "cache" / "imagenette" / "imagenette2-320"
    assert calls == [tmp_path / "cache" / "imagenette"]
    assert resolve_data_root("imagenette", tmp_path / "cache", downloader=fake_download) == root
    assert len(calls) == 1


def test_the_default_downloads_when_no_copy_is_found(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setattr(data_mod, "default_data_candidates", lambda: [tmp_path / "absent"])
    fake = lambda target: _layout(target / "imagenette2-320", {"a": 1}, {"a": 1})  # noqa: E731
    assert resolve_data_root(None, tmp_path / "cache", downloader=fake).parent.name == "imagenette"


def test_no_network_is_an_error_naming_where_the_files_go(tmp_path, monkeypatch):
    from urllib.error import URLError

    def offline(target: Path) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError) as error:
        resolve_data_root("imagenette", tmp_path / "cache", downloader=offline)
    text = str(error.value)
    assert str(tmp_path / "cache" / "imagenette") in text and "URLError" in text and "--data" in text


def test_holdout_is_a_fixed_disjoint_part_of_train(tmp_path):
    root = _layout(tmp_path / "d", {"a": 10, "b": 7}, {"a": 1, "b": 1})
    classes = list_classes(root)
    everything = list_files(root, "train", classes)
    held = list_files(root, "train", classes, holdout=0.2, part="holdout")
    fit = list_files(root, "train", classes, holdout=0.2, part="fit")
    assert sorted(held + fit) == sorted(everything) and not set(held) & set(fit)
    assert [label for _, label in held].count(0) == 2 and [label for _, label in held].count(1) == 2  # ceil
    assert list_files(root, "train", classes, holdout=0.2, part="holdout") == held  # fixed
    assert all(path.startswith("train/") for path, _ in held)
    with pytest.raises(ValueError, match="holdout must be in"):
        list_files(root, "train", classes, holdout=0.0, part="holdout")


def test_an_incomplete_download_is_an_error_and_other_ranks_wait_for_the_first(tmp_path):
    from suite.accuracy.data import (
        DOWNLOAD_DONE,
        download_imagenette,
        imagenette_cache_root,
        wait_for_download,
    )

    root = imagenette_cache_root(tmp_path)
    (root / "train").mkdir(parents=True)  # extraction stopped before val/
    with pytest.raises(DataNotFoundError, match="incomplete download"):
        download_imagenette(tmp_path, downloader=lambda target: None)
    with pytest.raises(TimeoutError, match="no completed Imagenette download"):
        wait_for_download(root.parent, timeout_s=0.05, poll_s=0.01)
    (root / "val").mkdir()
    (root.parent / DOWNLOAD_DONE).touch()
    assert download_imagenette(tmp_path, wait=True) == root
