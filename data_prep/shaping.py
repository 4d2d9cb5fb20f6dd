"""Conversion of images, maps and volumes: what the output samples look like, and how any
input sample is brought to that form.

Every input (decoded image, array slice) arrives as [B, C, *S] in its own dtype, S = (L,),
(H, W) or (D, H, W), and passes through the same steps: channels (1 <-> 3), centre crop (to a
square or cube), resize (Pillow for 2D; data_prep.volumes for 1D and 3D), dtype. Ranks decide
the output form from the probes of all inputs, so they agree without talking further.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from data_prep.volumes import resample
from hpcgan.errors import UserError

# ITU-R 601-2 luma, the weights Pillow uses for RGB -> L.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Probe:
    """What some samples look like before conversion, with an example name for each shape."""

    shapes: dict[tuple[int, ...], str]  # (C, *S) -> first sample seen with it
    bytes_only: bool  # every sample holds 8-bit values

    @staticmethod
    def merge(probes: Iterable[Probe]) -> Probe:
        shapes: dict[tuple[int, ...], str] = {}
        bytes_only = True
        for probe in probes:
            for shape, example in probe.shapes.items():
                shapes.setdefault(shape, example)
            bytes_only &= probe.bytes_only
        return Probe(shapes, bytes_only)


@dataclass(frozen=True)
class Target:
    """The output sample: [channels, *spatial] of dtype, after an optional centre crop."""

    channels: int
    spatial: tuple[int, ...]  # (L,), (H, W) or (D, H, W)
    dtype: str  # "uint8" (kind image) or "float32" (kind field)
    crop: bool

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.channels, *self.spatial)

    @property
    def kind(self) -> str:
        return "image" if self.dtype == "uint8" else "field"


def decide(
    probe: Probe, size: int | None, channels: int | None, dtype: str | None, crop: bool
) -> Target:
    """The output form from what the inputs hold and the options; UserError if they clash.

    Defaults: the inputs' channels (3 when grey and colour images mix), their common size,
    uint8 when every input is 8-bit and float32 (physical values kept) otherwise. Images and
    volumes do not mix.
    """
    by_rank = _group(probe.shapes, lambda shape: len(shape) - 1)
    if len(by_rank) > 1:
        raise UserError(
            f"inputs differ in spatial rank: {_examples(by_rank, 'spatial dimensions')}; "
            "convert images and volumes separately"
        )
    ndim = next(iter(by_rank))
    unit = {1: "(L)", 2: "(HxW)", 3: "(DxHxW)"}[ndim]
    by_channels = _group(probe.shapes, lambda shape: shape[0])
    if channels is None:
        found = sorted(by_channels)
        channels = 3 if found == [1, 3] else found[0]
        if len(found) > 1 and found != [1, 3]:
            raise UserError(
                f"inputs differ in channels: {_examples(by_channels, 'channel(s)')}; "
                "pass --channels 1 or 3"
            )
    for count, example in by_channels.items():
        if count != channels and {count, channels} != {1, 3}:
            raise UserError(
                f"{example} has {count} channels; --channels converts only between 1 and 3"
            )
    by_size = _group(probe.shapes, lambda shape: _cropped(shape[1:], crop))
    if size is None and len(by_size) > 1:
        raise UserError(
            f"inputs differ in size: {_examples(by_size, unit)}; "
            "pass --size S to resize them (with --crop to keep the aspect ratio)"
        )
    spatial = (size,) * ndim if size is not None else next(iter(by_size))
    return Target(channels, spatial, dtype or ("uint8" if probe.bytes_only else "float32"), crop)


def conform(samples: np.ndarray, target: Target) -> np.ndarray:
    """[B, C, *S] samples of any real dtype -> [B, *target.shape] of target.dtype.

    Raises UserError (without naming the input; the caller knows it) for values that cannot
    be stored as uint8.
    """
    x = _to_channels(samples, target.channels)
    if target.crop:
        x = _centre_square(x) if x.ndim == 4 else _centre_cube(x)
    if target.dtype == "uint8" and x.dtype != np.uint8:
        _check_byte_range(x)
    if x.shape[2:] != target.spatial:
        x = (
            _resize(x, *target.spatial, target.dtype)
            if x.ndim == 4
            else resample(x, target.spatial)
        )
    if target.dtype == "float32":
        return x.astype(np.float32, copy=False)
    if x.dtype == np.uint8:
        return x
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _group(shapes: dict, key) -> dict:
    groups: dict = {}
    for shape, example in shapes.items():
        groups.setdefault(key(shape), example)
    return groups


def _examples(groups: dict, unit: str) -> str:
    shown = [f"{example} has {_show(value)} {unit}" for value, example in list(groups.items())[:2]]
    more = f" (and {len(groups) - 2} more)" if len(groups) > 2 else ""
    return " but ".join(shown) + more


def _show(value: object) -> str:
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _cropped(spatial: tuple[int, ...], crop: bool) -> tuple[int, ...]:
    side = min(spatial)
    return (side,) * len(spatial) if crop else spatial


def _to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1 and channels == 3:
        return np.repeat(x, 3, axis=1)
    if x.shape[1] == 3 and channels == 1:
        return np.einsum("bc...,c->b...", x.astype(np.float32, copy=False), _LUMA)[:, None]
    raise UserError(f"cannot convert {x.shape[1]} channels to {channels}")


def _centre_square(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return x[:, :, top : top + side, left : left + side]


def _centre_cube(x: np.ndarray) -> np.ndarray:
    side = min(x.shape[2:])
    starts = [(n - side) // 2 for n in x.shape[2:]]
    return x[(slice(None), slice(None), *(slice(a, a + side) for a in starts))]


def _check_byte_range(x: np.ndarray) -> None:
    low, high = x.min(), x.max()
    if not (np.isfinite(low) and np.isfinite(high) and low >= 0 and high <= 255):
        raise UserError(
            f"values from {low:g} to {high:g} do not fit uint8 (0..255); use --dtype float32"
        )


def _resize(x: np.ndarray, height: int, width: int, dtype: str) -> np.ndarray:
    """Resize each sample with Pillow.

    Images (uint8 output): Lanczos when shrinking (sharp, little aliasing), bicubic when
    enlarging. Fields (float32 output): box averaging when shrinking, which keeps means and
    positivity (a physical quantity's total), bilinear when enlarging, which adds no overshoot.
    """
    shrink = height * width < x.shape[2] * x.shape[3]
    resampling = Image.Resampling
    if dtype == "uint8":
        method = resampling.LANCZOS if shrink else resampling.BICUBIC
    else:
        method = resampling.BOX if shrink else resampling.BILINEAR
    if dtype == "uint8" and x.dtype == np.uint8 and x.shape[1] in (1, 3):
        out = np.empty((len(x), x.shape[1], height, width), dtype=np.uint8)
        for i, sample in enumerate(x):  # Pillow's 8-bit L/RGB path: fast, rounds once
            hwc = np.ascontiguousarray(sample.transpose(1, 2, 0))
            image = Image.fromarray(hwc[:, :, 0] if x.shape[1] == 1 else hwc)
            resized = np.asarray(image.resize((width, height), method))
            out[i] = resized.reshape(height, width, -1).transpose(2, 0, 1)
        return out
    out = np.empty((len(x), x.shape[1], height, width), dtype=np.float32)
    for i, sample in enumerate(x):  # float "F" images, one channel at a time
        for c, plane in enumerate(sample):
            image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
            out[i, c] = np.asarray(image.resize((width, height), method))
    return out
