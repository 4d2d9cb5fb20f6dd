"""Image files (PNG, JPEG, TIFF, BMP) as a source of samples, one sample per file.

Files are decoded by the rank that converts them. Modes are normalised to three families:
grey 8-bit (L), colour 8-bit (RGB: palette, alpha and CMYK images included; alpha dropped) and
grey numeric (16-bit, 32-bit integer or float TIFFs: values kept, so float32 output).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from data_prep.shaping import Probe, Target, conform
from hpcgan.errors import UserError, one_line

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
_GREY = frozenset({"1", "L", "LA", "La"})
_NUMERIC = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


class ImageFiles:
    """Samples from a list of image files, with optional labels (class indices)."""

    def __init__(self, paths: list[str], labels: np.ndarray | None) -> None:
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def probe(self, index: np.ndarray) -> Probe:
        """Read the headers (size and mode, not the pixels) of the files at `index`."""
        shapes: dict[tuple[int, int, int], str] = {}
        bytes_only = True
        for i in index:
            path = self.paths[i]
            try:
                with Image.open(path) as image:
                    width, height = image.size
                    mode = image.mode
            except Exception as err:  # Pillow reports bad files with many exception types
                raise UserError(f"{path}: not a readable image ({one_line(err)})") from err
            channels = 1 if mode in _GREY or mode in _NUMERIC else 3
            shapes.setdefault((channels, height, width), path)
            bytes_only &= mode not in _NUMERIC
        return Probe(shapes, bytes_only)

    def read(self, index: np.ndarray, target: Target) -> np.ndarray:
        """Decode and convert the files at `index`: [len(index), *target.shape]."""
        out = np.empty((len(index), *target.shape), dtype=target.dtype)
        for k, i in enumerate(index):
            path = self.paths[i]
            try:
                out[k] = conform(_decode(path)[None], target)[0]
            except UserError as err:
                raise UserError(f"{path}: {one_line(err)}") from err
        return out

    def describe(self, i: int) -> str:
        return self.paths[i]


def _decode(path: str) -> np.ndarray:
    """One file as [C, H, W] in its own dtype (uint8, or uint16/int32/float32 for numeric)."""
    try:
        with Image.open(path) as image:
            if image.mode in _GREY and image.mode != "L":
                image = image.convert("L")
            elif image.mode not in _GREY | _NUMERIC and image.mode != "RGB":
                image = image.convert("RGB")
            array = np.asarray(image)
    except Exception as err:  # truncated data, bad chunks, unsupported variants, ...
        raise UserError(f"cannot decode image ({one_line(err)})") from err
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
