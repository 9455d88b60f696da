"""Batch augmentation on cached uint8 images with tensor ops (no PIL, no per-image loop).

A batch is gathered from the uint8 cache ``(N, S, S, 3)``, moved to the device, and turned into
a normalised float ``(B, 3, S, S)`` tensor whose memory is channels-last (the permute of an
NHWC tensor *is* the channels-last layout, so no copy is made for it).

Training crops are drawn per image as an affine map and applied to the whole batch in one
``grid_sample`` call:

* ``rrc``: random-resized crop (area fraction in ``scale``, aspect ratio log-uniform in
  ``ratio``, as torchvision's ``RandomResizedCrop`` but without its retry loop: a side longer
  than the image is clipped to it) and a horizontal flip with probability 1/2;
* ``crop``: a random translation by up to ``pad`` pixels with reflection at the border (the
  classic pad-and-crop), and the flip.

The crop parameters are drawn on the CPU from an explicit ``torch.Generator`` for the whole
global batch, so every image gets the same crop whatever the device, the number of DDP ranks
or the rank it lands on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "to_float",
    "center_crop",
    "sample_rrc",
    "sample_translate",
    "apply_affine",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float(batch: Tensor, device: torch.device | str, channels_last: bool = True) -> Tensor:
    """uint8 ``(B, S, S, 3)`` -> normalised float32 ``(B, 3, S, S)`` on ``device``."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).mul_(255).view(1, 3, 1, 1)
    inv_std = torch.tensor(IMAGENET_STD, device=x.device).mul_(255).reciprocal_().view(1, 3, 1, 1)
    x = (x - mean).mul_(inv_std)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def center_crop(batch: Tensor, size: int) -> Tensor:
    """The central ``size x size`` window of a uint8 ``(B, S, S, 3)`` batch (a view)."""
    s = batch.shape[1]
    if size > s:
        raise ValueError(f"crop size {size} is larger than the cached images ({s} px)")
    top = (s - size) // 2
    return batch[:, top:top + size, top:top + size, :]


def _flip_signs(n: int, generator: torch.Generator, flip: bool) -> Tensor:
    if not flip:
        return torch.ones(n)
    return torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)


def sample_rrc(
    n: int,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> Tensor:
    """Affine maps ``(n, 2, 3)`` of random-resized crops (normalised coordinates)."""
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = log_ratio.exp()
    width = (area * aspect).sqrt().clamp(max=1.0)
    height = (area / aspect).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - width)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - height)
    sign = _flip_signs(n, generator, flip)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = width * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = height
    theta[:, 1, 2] = cy
    return theta


def sample_translate(n: int, generator: torch.Generator, size: int, *, pad: int = 4, flip: bool = True) -> Tensor:
    """Affine maps ``(n, 2, 3)`` of whole-pixel shifts in ``[-pad, pad]`` (and flips)."""
    shift = torch.randint(-pad, pad + 1, (n, 2), generator=generator).float() * (2 / size)
    sign = _flip_signs(n, generator, flip)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sign
    theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    return theta


def apply_affine(x: Tensor, theta: Tensor, size: int, *, padding_mode: str = "reflection") -> Tensor:
    """Resample the float batch ``x`` through the maps ``theta`` to ``size x size`` (bilinear)."""
    grid = F.affine_grid(theta.to(x.device, x.dtype), [x.shape[0], x.shape[1], size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return out.contiguous(memory_format=torch.channels_last)
