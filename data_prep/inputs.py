"""What the user passed to `convert --input`, as one sequence of samples.

`plan_inputs` (rank 0) detects each input's format (by content, then extension, unless
`--format` says), walks folders, gives class-folder images their labels and pairs IDX image
files with their label files; it returns picklable specs. `Catalog` (every rank) opens them and
reads any samples by their global index: inputs in the order given, files in a folder sorted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from data_prep.arrays import ArraySource, ArraySpec, idx_head, idx_header, open_array
from data_prep.errors import reading
from data_prep.images import EXTENSIONS, ImageFiles
from data_prep.shaping import Probe, Target
from hpcgan.data.conditions import Conditions
from hpcgan.errors import UserError

FORMATS = ("auto", "images", "npy", "npz", "idx", "hdf5")
_HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf", ".he5"}


@dataclass(frozen=True)
class ImageSpec:
    """Image files converted as one source, with their class labels if from class folders."""

    name: str
    paths: list[str]
    labels: list[int] | None = None


@dataclass(frozen=True)
class Inputs:
    specs: list[ImageSpec | ArraySpec]
    class_names: list[str] = field(default_factory=list)  # labels from class folders
    labels: bool = True  # False: drop every label


def plan_inputs(
    paths: list[str],
    fmt: str = "auto",
    key: str | None = None,
    labels_key: str | None = None,
    layout: str = "auto",
    labels: bool = True,
    shape: tuple[int, ...] | None = None,
    conditions: tuple[str, ...] | None = None,
) -> Inputs:
    """Specs for the inputs, in the order given; UserError naming the input if one is bad."""
    found = [(Path(p), _format(Path(p), fmt)) for p in paths]
    walked = {path: _walk(path) for path, kind in found if kind == "images" and path.is_dir()}
    class_names = _class_names(list(walked.values()))
    idx_labels = _pair_idx([path for path, kind in found if kind == "idx"])
    specs: list[ImageSpec | ArraySpec] = []
    for path, kind in found:
        if conditions and kind in ("images", "idx"):
            raise UserError(f"{path}: --conditions needs npz or HDF5 inputs, not {kind} files")
        if path in walked:
            specs.append(_folder_spec(path, *walked[path], class_names))
        elif (
            kind == "images"
            and specs
            and isinstance(specs[-1], ImageSpec)
            and specs[-1].labels is None
        ):
            specs[-1].paths.append(str(path))  # image files given one by one: one source
        elif kind == "images":
            specs.append(ImageSpec(str(path), [str(path)]))

        elif kind == "idx" and path in idx_labels:
            specs.append(ArraySpec(kind, str(path), None, idx_labels[path], layout))
        elif kind != "idx":  # (IDX label files travel with their images)
            specs.append(ArraySpec(kind, str(path), key, labels_key, layout, shape, conditions))
    return Inputs(specs, class_names, labels)


class Catalog:
    """All inputs as one sequence of samples, opened on the rank that reads them."""

    def __init__(self, inputs: Inputs) -> None:
        self.sources: list[ImageFiles | ArraySource] = [_open(spec) for spec in inputs.specs]
        lengths = [len(source) for source in self.sources]
        self.offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        self.has_labels = inputs.labels and _labels_agree(inputs, self.sources)
        self.condition_columns = _conditions_agree(self.sources)  # (names, units) or None
        knowns = {getattr(source, "known", None) for source in self.sources}
        self.known = knowns.pop() if len(knowns) == 1 else None  # a recognised file kind

    @property
    def has_conditions(self) -> bool:
        return self.condition_columns is not None

    def conditions(self, index: np.ndarray) -> Conditions:
        """The conditions of the samples at `index` (global, any order), [len(index), K]."""
        names, units = self.condition_columns
        values = np.empty((len(index), len(names)), dtype=np.float32)
        for source, positions, local in self._split(index):
            values[positions] = source.conditions.values[local]
        return Conditions(values, names, units)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def probe(self, index: np.ndarray) -> list[Probe]:
        """Probes of the samples at `index` (global indices), one per source touched."""
        return [source.probe(local) for source, _, local in self._split(index)]

    def read(self, index: np.ndarray, target: Target) -> tuple[np.ndarray, np.ndarray | None]:
        """Samples at `index` (global, any order) as [len(index), *target.shape] and labels."""
        parts = self._split(index)
        if len(parts) == 1 and np.all(np.diff(index) > 0):  # one input, in order: no copy
            source, _, local = parts[0]
            labels = source.labels[local] if self.has_labels else None
            return source.read(local, target), labels
        images = np.empty((len(index), *target.shape), dtype=target.dtype)
        labels = np.empty(len(index), dtype=np.int64) if self.has_labels else None
        for source, positions, local in parts:
            images[positions] = source.read(local, target)
            if labels is not None:
                labels[positions] = source.labels[local]
        return images, labels

    def describe(self, i: int) -> str:
        """The input file (and position in it) of global sample i, for messages."""
        s = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.sources[s].describe(i - int(self.offsets[s]))

    def _split(
        self, index: np.ndarray
    ) -> list[tuple[ImageFiles | ArraySource, np.ndarray, np.ndarray]]:
        """(source, positions in `index`, increasing local indices) for each source touched."""
        which = np.searchsorted(self.offsets, index, side="right") - 1
        parts = []
        for s in np.unique(which):
            positions = np.flatnonzero(which == s)
            local = index[positions] - self.offsets[s]
            order = np.argsort(local, kind="stable")
            parts.append((self.sources[s], positions[order], local[order]))
        return parts


def _format(path: Path, forced: str) -> str:
    """An input's format: folders hold images; files are recognised by content, then name."""
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if path.is_dir():
        if forced not in ("auto", "images"):
            raise UserError(f"{path} is a folder; --format {forced} needs a file")
        return "images"
    if forced != "auto":
        return forced
    with reading(path), open(path, "rb") as f:
        head = f.read(8)
    suffix = path.suffix.lower()
    if h5py.is_hdf5(path) or suffix in _HDF5_SUFFIXES:
        return "hdf5"  # a .h5 that is not HDF5 is reported as such when opened
    if head.startswith(b"\x93NUMPY") or suffix == ".npy":
        return "npy"
    if head.startswith(b"PK") or suffix == ".npz":
        return "npz"
    if idx_header(idx_head(path)) is not None:
        return "idx"
    if suffix in EXTENSIONS:
        return "images"
    raise UserError(
        f"{path}: unrecognised input (expected a folder of images, an image, .npy, .npz, "
        "IDX or HDF5); name the format with --format"
    )


def _walk(folder: Path) -> tuple[list[str], list[str | None]]:
    """Image files under `folder` (sorted by path, hidden ones skipped) and each one's class:
    the top-level subfolder it lies in, None for files directly in `folder`."""
    found: list[tuple[str, ...]] = []  # path parts below folder
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        below = os.path.relpath(root, folder)
        parts = () if below == os.curdir else tuple(below.split(os.sep))
        found += [
            (*parts, name)
            for name in names
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in EXTENSIONS
        ]
    if not found:
        raise UserError(
            f"{folder}: no image files ({', '.join(sorted(EXTENSIONS))}) in this folder"
        )
    found.sort()
    files = [os.path.join(folder, *parts) for parts in found]
    return files, [parts[0] if len(parts) > 1 else None for parts in found]


def _class_names(walked: list[tuple[list[str], list[str | None]]]) -> list[str]:
    """Sorted class-folder names, if every folder input is organised in class folders."""
    classes = [c for _, folder_classes in walked for c in folder_classes]
    if not classes or None in classes:
        return []
    return sorted(set(classes))


def _folder_spec(
    folder: Path, files: list[str], classes: list[str | None], class_names: list[str]
) -> ImageSpec:
    if not class_names:
        return ImageSpec(str(folder), files)
    index = {c: i for i, c in enumerate(class_names)}
    return ImageSpec(str(folder), files, [index[c] for c in classes])


def _labels_agree(inputs: Inputs, sources: list[ImageFiles | ArraySource]) -> bool:
    """Whether the samples have labels: all inputs do, or none; class-folder indices and
    arrays' own labels mean different things, so they do not mix either."""
    names = [spec.name for spec in inputs.specs]
    labelled = [name for name, source in zip(names, sources) if source.labels is not None]
    unlabelled = [name for name, source in zip(names, sources) if source.labels is None]
    if labelled and unlabelled:
        raise UserError(
            f"{labelled[0]} has labels but {unlabelled[0]} has none; pass --no-labels to drop them"
        )
    arrays = [spec.path for spec in inputs.specs if isinstance(spec, ArraySpec)]
    if inputs.class_names and arrays:
        raise UserError(
            f"class-folder labels cannot be combined with the labels of {arrays[0]}; "
            "convert them separately or pass --no-labels"
        )
    return bool(labelled)


def _conditions_agree(
    sources: list[ImageFiles | ArraySource],
) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(names, units) of the conditions every input has alike; None when none has any."""
    found = [getattr(source, "conditions", None) for source in sources]
    if all(c is None for c in found):
        return None
    for source, c in zip(sources, found):
        if c is None:
            raise UserError(f"{_name(source)} has no conditions but {_first(sources)} has")
        if (c.names, c.units) != (found[0].names, found[0].units):
            raise UserError(
                f"{source.name}: conditions {_columns(c)} differ from {_columns(found[0])} "
                f"of {_first(sources)}"
            )
    return found[0].names, found[0].units


def _first(sources: list) -> str:
    return next(_name(s) for s in sources if getattr(s, "conditions", None) is not None)


def _name(source: ImageFiles | ArraySource) -> str:
    return getattr(source, "name", None) or source.describe(0)


def _columns(c: Conditions) -> str:
    return ", ".join(f"{n} [{u}]" if u else n for n, u in zip(c.names, c.units))


def _pair_idx(paths: list[Path]) -> dict[Path, str | None]:
    """Each IDX images file -> its label file (None if none): one given for it (by name, or the
    only one), else a sibling named like MNIST's (train-images-idx3 -> train-labels-idx1)."""
    headers = {p: idx_header(idx_head(p)) for p in paths}
    for path, header in headers.items():
        if header is None:
            raise UserError(f"{path}: not an IDX file (bad magic number)")
    label_files = [p for p in paths if len(headers[p][1]) == 1]
    image_files = [p for p in paths if len(headers[p][1]) > 1]
    pairs: dict[Path, str | None] = {}
    for image in image_files:
        wanted = _label_name(image.name)
        given = [p for p in label_files if _strip_gz(p.name) == wanted]
        if not given and len(image_files) == 1 and len(label_files) == 1:
            given = label_files
        siblings = [image.with_name(wanted + gz) for gz in ("", ".gz")]
        found = given or [p for p in siblings if p.is_file()]
        pairs[image] = str(found[0]) if found else None
    unused = [p for p in label_files if str(p) not in pairs.values()]
    if unused:
        raise UserError(f"{unused[0]}: an IDX label file with no matching images file")
    return pairs


def _strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def _label_name(image_name: str) -> str:
    return _strip_gz(image_name).replace("images-idx3", "labels-idx1").replace("images", "labels")


def _open(spec: ImageSpec | ArraySpec) -> ImageFiles | ArraySource:
    if isinstance(spec, ImageSpec):
        labels = None if spec.labels is None else np.asarray(spec.labels, dtype=np.int64)
        return ImageFiles(spec.paths, labels)
    return open_array(spec)
