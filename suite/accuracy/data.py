"""Images for the accuracy stage: an ImageFolder root decoded once into a uint8 cache.

Any folder with ``train/<class>/*`` and ``val/<class>/*`` works (ImageNet, ImageNet-100,
Imagenette). The default is ``$ATTNBENCH_DATA``, else ``../shared/datasets/imagenette`` beside
the checkout the package runs from, else beside the current folder (:func:`default_data_root`).

Each split is decoded, converted to RGB (grayscale, palette and CMYK images included),
resized so its shorter side is ``size`` (antialiased) and centre-cropped to ``size x size``,
then stored as one uint8 tensor ``(N, size, size, 3)`` with its labels in a cache file. The
cache file's name carries a hash of everything that decides its content: the file list with
sizes and modification times, the class list, the resolution and this module's format
version, so a changed dataset or setting never reads a stale cache and epochs never
re-decode a JPEG. Files that cannot be decoded are skipped and listed (``SplitData.skipped``);
the caller reports them.

A subset is chosen deterministically: a class list, or the first ``num_classes`` classes in
sorted order; ``per_class`` images per class are the ones whose file names sort first under a
SHA-1 of the name (a fixed pseudo-random sample that does not depend on the order the files
are listed in and keeps its members when other files are added).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from suite.env import PROJECT_ROOT
from suite.portable import shown_path

__all__ = [
    "IMAGE_EXTENSIONS",
    "DATA_ENV",
    "default_data_candidates",
    "default_data_root",
    "SplitData",
    "DataNotFoundError",
    "resolve_data_root",
    "download_imagenette",
    "imagenette_cache_root",
    "IMAGENETTE",
    "wait_for_download",
    "torchvision_imagenette",
    "list_classes",
    "select_classes",
    "list_files",
    "data_identity",
    "decode_image",
    "decode_pool_context",
    "default_cache_dir",
    "load_split",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
DATA_ENV = "ATTNBENCH_DATA"
"""Environment variable naming the default dataset root."""
_SHARED_IMAGENETTE = Path("..") / "shared" / "datasets" / "imagenette"
_CACHE_VERSION = 2


class DataNotFoundError(FileNotFoundError):
    """No usable ImageFolder root (with ``train/`` and ``val/``) was found."""


@dataclass
class SplitData:
    """One decoded split.

    Attributes:
        images: uint8 ``(N, S, S, 3)`` (channels last, as decoded).
        labels: int64 ``(N,)`` indices into ``classes``.
        classes: the class folder names, in label order.
        skipped: files that could not be decoded (relative to the root).
        cache_file: the cache file the split was read from or written to.
        from_cache: whether it was read from an existing cache (no decoding).
        files: the decoded files (relative to the root), in the order of ``images``.
        identity: a hash of the decoded files with their labels and sizes (see
            :func:`data_identity`), the same on every machine holding the same files; the
            per-image results of a run follow the order of ``files``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    skipped: list[str] = field(default_factory=list)
    cache_file: Path | None = None
    from_cache: bool = False
    files: list[str] = field(default_factory=list)
    identity: str = ""

    def __len__(self) -> int:
        return int(self.labels.numel())


def default_data_candidates() -> list[Path]:
    """Where the default dataset is looked for, in order: ``$ATTNBENCH_DATA`` when set (then
    only there); ``../shared/datasets/imagenette`` beside the source checkout the package runs
    from (when it runs from one); the same beside the current folder."""
    if os.environ.get(DATA_ENV):
        return [Path(os.environ[DATA_ENV]).expanduser().resolve()]
    candidates = [Path.cwd() / _SHARED_IMAGENETTE]
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        candidates.insert(0, PROJECT_ROOT / _SHARED_IMAGENETTE)
    return list(dict.fromkeys(c.resolve() for c in candidates))


def default_data_root() -> Path:
    """The first of :func:`default_data_candidates` that exists, else the first of them."""
    candidates = default_data_candidates()
    return next((c for c in candidates if c.is_dir()), candidates[0])


IMAGENETTE = "imagenette"
"""``--data imagenette``: the Imagenette copy in the cache folder, downloaded when absent."""
IMAGENETTE_SIZE = "320px"


def imagenette_cache_root(cache_dir: Path | None = None) -> Path:
    """Where ``--data imagenette`` keeps its download: ``<cache>/imagenette/imagenette2-320``."""
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / IMAGENETTE / "imagenette2-320"


def torchvision_imagenette(target: Path) -> None:
    """Download and extract Imagenette into ``target`` with torchvision's own dataset class
    (its progress bar shows the download)."""
    from torchvision.datasets import Imagenette

    Imagenette(str(target), size=IMAGENETTE_SIZE, download=True)


def download_imagenette(cache_dir: Path | None = None, downloader=torchvision_imagenette, *,
                        wait: bool = False) -> Path:
    """The Imagenette root in the cache folder, downloaded first when it is not there.

    ``wait``: this process does not download (another rank of a distributed run does); it waits
    for the completion marker the downloading process writes (:func:`wait_for_download`).
    Raises DataNotFoundError naming the folder the files go to when the download fails (no
    network, for instance)."""
    root = imagenette_cache_root(cache_dir)
    done = root.parent / DOWNLOAD_DONE
    complete = (root / "train").is_dir() and (root / "val").is_dir()
    if complete and not wait:
        done.touch()  # a copy put there by hand counts as complete
        return root
    if root.exists() and not wait:
        raise DataNotFoundError(f"{root} holds an incomplete download (no train/ or val/); remove it and run again")
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        wait_for_download(root.parent) if wait else downloader(root.parent)
    except (OSError, RuntimeError, ValueError) as error:  # urllib's URLError is an OSError
        raise DataNotFoundError(
            f"could not download Imagenette into {root.parent} ({type(error).__name__}: {error}); without "
            f"network, copy an ImageFolder tree with train/ and val/ to {root}, or pass --data PATH"
        ) from None
    if not ((root / "train").is_dir() and (root / "val").is_dir()):
        raise DataNotFoundError(f"the Imagenette download did not produce {root}/train and {root}/val")
    done.touch()
    return root


DOWNLOAD_DONE = ".download-complete"
"""Written beside the Imagenette folder once its download and extraction finished."""


def wait_for_download(target: Path, timeout_s: float = 7200.0, poll_s: float = 5.0) -> None:
    """For the other processes of a distributed run: wait until the first one has downloaded
    Imagenette into ``target`` (its completion marker appears)."""
    import time

    deadline = time.monotonic() + timeout_s
    while not (target / DOWNLOAD_DONE).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no completed Imagenette download appeared in {target} within {timeout_s:.0f} s")
        time.sleep(poll_s)


LAYOUT = "an ImageFolder root holding train/<class>/<image> and val/<class>/<image>"
"""The folder layout ``--data`` names, as the errors state it."""


def resolve_data_root(path: str | os.PathLike[str] | None, cache_dir: Path | None = None,
                      downloader=torchvision_imagenette, *, wait: bool = False) -> Path:
    """The dataset root: ``path`` if given (``"imagenette"``: :func:`download_imagenette`,
    unless a folder of that name exists here), else :func:`default_data_root`, else (no
    ``$ATTNBENCH_DATA`` and no shared copy) the downloaded Imagenette (``wait``: another
    process downloads it, see :func:`download_imagenette`).

    Raises DataNotFoundError naming the locations and the ``--data`` option when nothing is
    found or downloaded, or when the chosen root lacks ``train/`` or ``val/``.
    """
    if path is not None and str(path) == IMAGENETTE and not Path(IMAGENETTE).is_dir():
        return download_imagenette(cache_dir, downloader, wait=wait)
    root = Path(path).expanduser() if path is not None else default_data_root()
    if path is None and not root.is_dir():
        if not os.environ.get(DATA_ENV):
            return download_imagenette(cache_dir, downloader, wait=wait)
        looked = ", ".join(shown_path(c) for c in default_data_candidates())
        raise DataNotFoundError(
            f"no dataset found: looked for the default Imagenette copy at {looked} and no --data "
            f"PATH was given; pass --data pointing to an ImageFolder root with train/ and val/, "
            f"or set {DATA_ENV} (docs/data.md)"
        )
    if not root.is_dir():
        raise DataNotFoundError(f"--data {root} does not exist (expected {LAYOUT})")
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise DataNotFoundError(
            f"{root} is not an ImageFolder root: missing {', '.join(m + '/' for m in missing)} (expected {LAYOUT})")
    return root


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_classes(root: Path) -> list[str]:
    """Sorted class folder names under ``root/train``.

    Raises DataNotFoundError when ``val/`` has class folders that ``train/`` lacks (a model
    trained on ``train/`` cannot predict them), or when ``train/`` has no class folder."""
    classes = _class_folders(root / "train")
    if not classes:
        raise DataNotFoundError(f"{root / 'train'} has no class folders (expected train/<class>/<image>)")
    only_val = sorted(set(_class_folders(root / "val")) - set(classes))
    if only_val:
        raise DataNotFoundError(
            f"{root / 'val'} has class folders that train/ lacks: {', '.join(only_val[:10])}"
            f"{' ...' if len(only_val) > 10 else ''} (every val/ class needs a train/ folder of the same name)")
    return classes


def select_classes(
    available: Sequence[str], classes: Sequence[str] | None = None, num_classes: int | None = None
) -> list[str]:
    """The classes to use: ``classes`` (each must exist, order kept as sorted) or the first
    ``num_classes`` of ``available`` in sorted order, or all of them."""
    available = sorted(available)
    if classes:
        unknown = [c for c in classes if c not in available]
        if unknown:
            raise ValueError(
                f"classes not found under train/: {', '.join(unknown)} "
                f"(available: {', '.join(available[:20])}{' ...' if len(available) > 20 else ''})"
            )
        chosen = sorted(set(classes))
    else:
        chosen = list(available)
    if num_classes is not None:
        if num_classes < 1 or num_classes > len(chosen):
            raise ValueError(f"num_classes must be in 1..{len(chosen)}, got {num_classes}")
        chosen = chosen[:num_classes]
    return chosen


def _sample_key(name: str) -> str:
    return hashlib.sha1(name.encode("utf-8")).hexdigest()


HOLDOUT_PARTS = ("all", "fit", "holdout")


def list_files(
    root: Path, split: str, classes: Sequence[str], per_class: int | None = None,
    holdout: float = 0.0, part: str = "all",
) -> list[tuple[str, int]]:
    """``(path relative to root, label)`` for the images of ``split``, sorted by class then path.

    Images in folders nested inside a class folder belong to that class (as in torchvision's
    ``ImageFolder``). With ``per_class``, the ``per_class`` files of each class whose SHA-1 of
    the path sorts first (a deterministic pseudo-random sample). With ``holdout`` (a fraction,
    e.g. 0.1), each class's files are split the same way into a fixed held-out part (the first
    ``ceil(holdout * n)`` by that order) and the rest: ``part`` picks ``"holdout"``, ``"fit"``
    (the rest, then sampled by ``per_class``) or ``"all"``. Raises DataNotFoundError naming a
    class folder that is missing or holds no image.
    """
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be a positive int or None, got {per_class}")
    if part not in HOLDOUT_PARTS or not 0.0 <= holdout < 1.0 or (part != "all" and holdout == 0.0):
        raise ValueError(f"holdout must be in [0, 1) and > 0 for part 'fit' or 'holdout' "
                         f"(part one of {', '.join(HOLDOUT_PARTS)}); got holdout={holdout}, part={part!r}")
    items: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        folder = root / split / name
        if not folder.is_dir():
            raise DataNotFoundError(f"{folder} does not exist (class {name!r} has no {split}/ folder)")
        files = [p.relative_to(folder).as_posix() for p in folder.rglob("*")
                 if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
        if not files:
            raise DataNotFoundError(
                f"{folder} holds no image (accepted: {', '.join(IMAGE_EXTENSIONS)}, in the folder or below it)")
        if part != "all":
            ordered = sorted(files, key=_sample_key)
            held = math.ceil(holdout * len(ordered))
            files = ordered[:held] if part == "holdout" else ordered[held:]
        if per_class is not None and part != "holdout":
            files = sorted(files, key=_sample_key)[:per_class]
        items.extend((f"{split}/{name}/{f}", label) for f in sorted(files))
    return items


def data_identity(root: Path, items: Sequence[tuple[str, int]]) -> str:
    """A hash of a split's file list: each path relative to the root, its label and its size
    in bytes. Two folders holding the same files give the same identity on any machine; a
    folder whose files, classes or labels changed gives another, whatever its name."""
    digest = hashlib.sha256()
    for rel, label in items:
        digest.update(f"{rel}\0{label}\0{(root / rel).stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def decode_image(path: str | os.PathLike[str], size: int) -> np.ndarray | None:
    """Decode ``path`` to RGB, shorter side resized to ``size`` (antialiased), centre-cropped
    to ``size x size``; ``(size, size, 3)`` uint8, or None when the file cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale that is still >= size
            img = _to_rgb(img)
            w, h = img.size
            scale = size / min(w, h)
            new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
            img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
            left, top = (new_w - size) // 2, (new_h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError):
        return None


def _to_rgb(img):
    """RGB of a PIL image. 16-bit and 32-bit integer grayscale (16-bit PNGs open as ``I;16`` or
    ``I``) is scaled to 8 bits by its bit depth first: PIL's own conversion clips it at 255,
    which turns almost every pixel white."""
    from PIL import Image

    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max(initial=0) <= 65535 else float(values.max())
        gray = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return img.convert("RGB")


def default_cache_dir() -> Path:
    """``$ATTNBENCH_CACHE`` or ``$XDG_CACHE_HOME/attnbench`` (default ``~/.cache/attnbench``)."""
    if os.environ.get("ATTNBENCH_CACHE"):
        return Path(os.environ["ATTNBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "attnbench"


def _cache_key(root: Path, items: Sequence[tuple[str, int]], classes: Sequence[str], size: int) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": _CACHE_VERSION, "size": size, "classes": list(classes)}).encode())
    for rel, label in items:
        st = (root / rel).stat()
        digest.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def decode_pool_context() -> multiprocessing.context.BaseContext:
    """How the decoding processes start: ``fork`` (cheapest) on POSIX while this process has
    neither initialised CUDA nor joined a process group, since a forked child inherits CUDA and
    NCCL state it cannot use (a CUDA call there fails or hangs); ``forkserver`` after either,
    and ``spawn`` where there is no ``fork``."""
    import torch.distributed as dist

    if os.name != "posix":
        return multiprocessing.get_context("spawn")
    joined = dist.is_available() and dist.is_initialized()
    if torch.cuda.is_initialized() or joined:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("fork")


def _decode_job(args: tuple[str, int]) -> np.ndarray | None:
    return decode_image(*args)


def load_split(
    root: Path,
    split: str,
    classes: Sequence[str],
    size: int,
    *,
    per_class: int | None = None,
    holdout: float = 0.0,
    part: str = "all",
    cache_dir: Path | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SplitData:
    """Decode (or read from the cache) ``split`` of ``root`` at ``size x size``.

    Args:
        root: the ImageFolder root.
        split: ``"train"`` or ``"val"``.
        classes: class folder names; label ``i`` is ``classes[i]``.
        size: side of the square cached images.
        per_class: images per class (deterministic sample), or None for all.
        holdout, part: a fixed held-out part of the split (see :func:`list_files`).
        cache_dir: where cache files live (default :func:`default_cache_dir`).
        workers: decoding processes (default: the CPU count, at most 8), started as
            :func:`decode_pool_context` says.
        progress: called with the number of images decoded since the last call.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    items = list_files(root, split, classes, per_class, holdout, part)
    if not items:
        raise DataNotFoundError(f"no images under {root / split} for the chosen classes")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = split if part == "all" else f"{split}-{part}"
    cache_file = cache_dir / f"{root.name}-{name}-{size}px-{len(items)}-{_cache_key(root, items, classes, size)}.pt"
    if cache_file.exists():
        try:
            blob = torch.load(cache_file, mmap=True, weights_only=True)
            return SplitData(
                blob["images"], blob["labels"], list(blob["classes"]), list(blob["skipped"]),
                cache_file, True, list(blob["files"]),
                data_identity(root, list(zip(blob["files"], blob["labels"].tolist(), strict=True))),
            )
        except (OSError, RuntimeError, KeyError, EOFError):
            pass  # a damaged cache is rebuilt below

    images = np.empty((len(items), size, size, 3), dtype=np.uint8)
    keep = np.zeros(len(items), dtype=bool)
    jobs = [(str(root / rel), size) for rel, _ in items]
    workers = min(os.cpu_count() or 1, 8) if workers is None else max(1, workers)
    if workers > 1 and len(jobs) > 64:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=decode_pool_context()) as pool:
            results = pool.map(_decode_job, jobs, chunksize=32)
            _collect(results, images, keep, progress)
    else:
        _collect(map(_decode_job, jobs), images, keep, progress)
    skipped = [rel for (rel, _), ok in zip(items, keep, strict=True) if not ok]
    labels = torch.tensor([label for (_, label), ok in zip(items, keep, strict=True) if ok], dtype=torch.int64)
    files = [rel for (rel, _), ok in zip(items, keep, strict=True) if ok]
    data = SplitData(torch.from_numpy(images[keep]), labels, list(classes), skipped, cache_file, False,
                     files, data_identity(root, list(zip(files, labels.tolist(), strict=True))))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
    torch.save(
        {"images": data.images, "labels": data.labels, "classes": data.classes, "skipped": skipped,
         "files": files},
        tmp,
    )
    os.replace(tmp, cache_file)
    return data


def _collect(results, images: np.ndarray, keep: np.ndarray, progress: Callable[[int], None] | None) -> None:
    for i, array in enumerate(results):
        if array is not None:
            images[i] = array
            keep[i] = True
        if progress is not None:
            progress(1)
