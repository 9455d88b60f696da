"""Batched tensor augmentation of the accuracy stage."""

from __future__ import annotations

import torch

from suite.accuracy.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    apply_affine,
    center_crop,
    sample_rrc,
    sample_translate,
    to_float,
)


def _batch(n=4, size=16):
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_to_float_normalises_and_is_channels_last():
    batch = _batch()
    x = to_float(batch, "cpu")
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    expected = (batch[0, 3, 5, 1].float() / 255 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert torch.allclose(x[0, 1, 3, 5], expected, atol=1e-5)


def test_center_crop():
    batch = _batch(size=10)
    assert torch.equal(center_crop(batch, 6), batch[:, 2:8, 2:8])


def test_identity_maps_reproduce_the_image():
    x = to_float(_batch(), "cpu")
    gen = torch.Generator().manual_seed(1)
    theta = sample_translate(4, gen, 16, pad=0, flip=False)
    assert torch.allclose(apply_affine(x, theta, 16), x, atol=1e-5)
    theta = sample_rrc(4, gen, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    assert torch.allclose(apply_affine(x, theta, 16), x, atol=1e-5)


def test_translation_is_a_whole_pixel_shift_and_flip_mirrors():
    x = to_float(_batch(n=64), "cpu")
    theta = sample_translate(64, torch.Generator().manual_seed(2), 16, pad=3, flip=True)
    out = apply_affine(x, theta, 16)
    for i in range(64):
        dx, dy = (theta[i, :, 2] * 16 / 2).round().long().tolist()
        flipped = bool(theta[i, 0, 0] < 0)
        src = x[i].flip(-1) if flipped else x[i]
        dx = -dx if flipped else dx  # x_in = -x_out + t: the flipped image moves the other way
        # interior pixels (away from the reflected border) are the shifted source
        inner = out[i, :, 4:12, 4:12]
        assert torch.allclose(inner, src[:, 4 + dy:12 + dy, 4 + dx:12 + dx], atol=1e-4), i
    assert (theta[:, 0, 0] < 0).any() and (theta[:, 0, 0] > 0).any()


def test_sampling_is_deterministic_and_within_bounds():
    a = sample_rrc(256, torch.Generator().manual_seed(3), scale=(0.35, 1.0))
    b = sample_rrc(256, torch.Generator().manual_seed(3), scale=(0.35, 1.0))
    assert torch.equal(a, b)
    width, height = a[:, 0, 0].abs(), a[:, 1, 1]
    assert (width <= 1).all() and (height <= 1).all()
    assert ((width * height) >= 0.35 * 0.74).all()  # area, after clipping a side at 1
    assert (a[:, 0, 2].abs() <= 1 - width + 1e-6).all() and (a[:, 1, 2].abs() <= 1 - height + 1e-6).all()
    out = apply_affine(torch.randn(256, 3, 20, 20), a, 12)
    assert out.shape == (256, 3, 12, 12)
