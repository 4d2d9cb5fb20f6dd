"""Volumes (3D samples [C, D, H, W]) in conversion: the axis orders arrays may hold them in,
and resampling to another size.

Resampling runs per axis in two steps, in float64 so a constant volume stays exactly constant:
axes that shrink are averaged over the input cells each output cell covers (area averaging, as
torch's adaptive average pooling does: it keeps means and positivity, a physical quantity's
total), then axes that grow are interpolated trilinearly (no overshoot). A volume of 51x51x25
resized to 32 is thus averaged down along D and H and interpolated up along W.
"""

from __future__ import annotations

import numpy as np

from hpcgan.data.format import SPATIAL_RANKS
from hpcgan.errors import UserError

# --layout values: axis orders of arrays, with the array rank each is for. auto picks one from
# the rank and shape (see data_prep.arrays).
LAYOUTS = {
    "auto": None,
    "nchw": 4,  # images/maps, channels first
    "nhwc": 4,  # images/maps, channels last
    "ndhw": 4,  # volumes, one channel
    "ncdhw": 5,  # volumes, channels first
    "ndhwc": 5,  # volumes, channels last (Keras, e.g. 3DGAN's files)
}


def parse_shape(text: str) -> tuple[int, ...]:
    """--shape D,H,W (or H,W, or L for 1D vectors): the shape of one flat sample, every
    side >= 1."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) not in SPATIAL_RANKS or min(shape) < 1:
        raise UserError(f"--shape must be D,H,W (or H,W, or L) of positive integers, got {text!r}")
    return shape


def to_ncs(x: np.ndarray, axes: str, shape: tuple[int, ...] | None) -> np.ndarray:
    """Samples in axis order `axes` (see ArraySource) as [B, C, *S]."""
    if axes in ("nhw", "ndhw"):
        return x[:, None]
    if axes == "nhwc":
        return x.transpose(0, 3, 1, 2)
    if axes == "ndhwc":
        return x.transpose(0, 4, 1, 2, 3)
    if axes == "flat":
        return x.reshape(len(x), 1, *shape)
    return x  # nchw, ncdhw


def sample_shape(shape: tuple[int, ...], axes: str, flat: tuple[int, ...] | None) -> tuple:
    """(C, *S) of one sample of an array of `shape` in axis order `axes`."""
    if axes in ("nhw", "ndhw"):
        return (1, *shape[1:])
    if axes in ("nhwc", "ndhwc"):
        return (shape[-1], *shape[1:-1])
    if axes == "flat":
        return (1, *flat)
    return tuple(shape[1:])


def resample(x: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """[B, C, D, H, W] (or [B, C, L]) of any real dtype -> float32 [B, C, *spatial]: area
    averaging along axes that shrink, then (tri)linear interpolation (align_corners=False)
    along axes that grow."""
    import torch  # only when volumes are resized
    import torch.nn.functional as F

    pool, mode = {1: (F.adaptive_avg_pool1d, "linear"), 3: (F.adaptive_avg_pool3d, "trilinear")}[
        len(spatial)
    ]
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    down = tuple(min(a, b) for a, b in zip(x.shape[2:], spatial))
    if down != tuple(x.shape[2:]):
        t = pool(t, down)
    if down != tuple(spatial):
        t = F.interpolate(t, size=tuple(spatial), mode=mode, align_corners=False)
    return t.numpy().astype(np.float32)
