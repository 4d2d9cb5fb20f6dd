"""Built-in datasets, prepared once into ``data.root`` on first use."""

from __future__ import annotations

from pathlib import Path

from hpcgan.data.write import write_dataset

# name -> file name
BUILTIN = {
    "digits": "digits-32.h5",
    "grf": "grf-64.h5",
    "grf3d": "grf3d-32.h5",
}
# grf3d: volumes and side (tests make a smaller one).
GRF3D_N, GRF3D_SIZE = 2048, 32


def builtin_path(root: str, name: str) -> Path:
    return Path(root) / BUILTIN[name]


def prepare_builtin(root: str, name: str) -> Path:
    """Write the built-in dataset unless it is already there (call on one rank only)."""
    from hpcgan.data import synth  # PIL and scikit-learn: only when a dataset is made

    path = builtin_path(root, name)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if name == "digits":
        images, labels = synth.digits(size=32)
        source = "sklearn-digits 32x32"
    elif name == "grf":
        images, labels = synth.grf(4096, size=64, seed=0), None
        source = synth.grf_source(seed=0)
    else:  # grf3d: 2048 volumes of 32^3 (256 MiB), as `data_prep synth --kind grf3d`
        images, labels = synth.grf(GRF3D_N, size=GRF3D_SIZE, seed=0, ndim=3), None
        source = synth.grf_source(seed=0, ndim=3)
    kind = "image" if name == "digits" else "field"
    symmetry = synth.symmetry(name, images.shape[2:])
    write_dataset(path, images, labels, kind=kind, source=source, symmetry=symmetry)
    return path
