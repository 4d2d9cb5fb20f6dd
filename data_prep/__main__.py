"""Prepare datasets for hpcgan as schema-1 HDF5 files (layout: design.md section 5).

    python -m data_prep synth   --kind {digits,grf} --out FILE.h5 [--n N] [--size S] [--seed K]
    python -m data_prep convert --input PATH [PATH ...] --out FILE.h5 [--size S] [--channels 1|3]
                                [--chunk-samples N] [--compression none|lzf|gzip]
    python -m data_prep verify  FILE.h5

Exit status 0 when done; bad input prints one line `data_prep: error: ...` on stderr and
exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from data_prep import synth
from hpcgan.data.schema import DatasetInfo, SchemaError, read_info, scan, write_dataset

# kind -> (default --n, default --size, schema kind); None means every sample.
_SYNTH_DEFAULTS = {"digits": (None, 32, "image"), "grf": (4096, 64, "field")}


class _Parser(argparse.ArgumentParser):
    """Reports usage errors like every other error: one line, exit 2 (via main)."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; map bad input of any kind to one stderr line and exit status 2."""
    try:
        args = _parser().parse_args(argv)
        return args.run(args)
    except (SchemaError, OSError, ValueError) as err:
        print(f"data_prep: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="data_prep", description="Prepare datasets for hpcgan as schema-1 HDF5 files."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("synth", help="generate a built-in synthetic dataset")
    p.add_argument(
        "--kind",
        required=True,
        choices=sorted(_SYNTH_DEFAULTS),
        help="digits: scikit-learn's handwritten digits with labels (uint8 images); "
        "grf: lognormal Gaussian random fields, P(k) ~ k^-3 (float32 fields)",
    )
    p.add_argument("--out", required=True, metavar="FILE.h5", help="output HDF5 file")
    p.add_argument(
        "--n",
        type=int,
        help="number of samples (digits: at most 1797, default all; grf: default 4096)",
    )
    p.add_argument(
        "--size",
        type=int,
        help="height and width, a power of two >= 8 (default: digits 32, grf 64)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of grf (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(run=_synth)

    p = commands.add_parser("convert", help="convert image files or arrays (not implemented yet)")
    p.add_argument(
        "--input", required=True, nargs="+", metavar="PATH", help="input files or directories"
    )
    p.add_argument("--out", required=True, metavar="FILE.h5", help="output HDF5 file")
    p.add_argument("--size", type=int, help="resize samples to SIZE x SIZE")
    p.add_argument("--channels", type=int, choices=(1, 3), help="convert to 1 or 3 channels")
    p.add_argument(
        "--chunk-samples",
        type=int,
        metavar="N",
        help="samples per HDF5 chunk (default: chunks of about 0.5 MiB)",
    )
    p.add_argument(
        "--compression",
        choices=("none", "lzf", "gzip"),
        default="none",
        help="HDF5 compression of /images (default none)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(run=_convert)

    p = commands.add_parser("verify", help="check a dataset file: schema, every value, statistics")
    p.add_argument("file", metavar="FILE.h5", help="dataset to check")
    p.set_defaults(run=_verify)
    return parser


def _synth(args: argparse.Namespace) -> int:
    out = _output_path(args.out, args.overwrite)
    default_n, default_size, kind = _SYNTH_DEFAULTS[args.kind]
    n = default_n if args.n is None else args.n
    size = default_size if args.size is None else args.size
    if n is not None and n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    if args.kind == "digits":
        images, labels = synth.digits(size)
        images, labels = images[:n], labels[:n]
        source = synth.DIGITS_SOURCE
    else:
        images, labels = synth.grf(n, size, seed=args.seed), None
        source = synth.grf_source(seed=args.seed)
    info = write_dataset(out, images, labels, kind=kind, source=source)
    stats = info.stats
    print(
        f"wrote {info.path}: {info.n} x {_shape(info)} {info.dtype} {info.kind}, "
        f"min {stats['min']:.4g} max {stats['max']:.4g} mean {stats['mean']:.4g} "
        f"std {stats['std']:.4g}, {_labels(info)}"
    )
    return 0


def _convert(args: argparse.Namespace) -> int:
    raise ValueError("convert is not implemented yet")


def _verify(args: argparse.Namespace) -> int:
    info = read_info(args.file)
    stats = scan(args.file)["stats"]
    chunk_mib = info.chunk_samples * info.sample_nbytes / 2**20
    print(f"{info.path}: ok")
    print(
        f"  samples   {info.n} x {_shape(info)} {info.dtype} ({info.kind}, source: {info.source})"
    )
    print(
        f"  values    min {stats['min']:.6g} max {stats['max']:.6g} "
        f"mean {stats['mean']:.6g} std {stats['std']:.6g}"
    )
    print(f"  labels    {_labels(info)}")
    print(
        f"  chunks    {info.chunk_samples} samples ({chunk_mib:.2f} MiB), "
        f"compression {info.compression or 'none'}"
    )
    return 0


def _output_path(out: str, overwrite: bool) -> Path:
    """Fail before any work if the output cannot or must not be written."""
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; --out needs a file name")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise ValueError(f"{path}: directory {path.parent} does not exist")
    return path


def _shape(info: DatasetInfo) -> str:
    return "x".join(map(str, info.shape))


def _labels(info: DatasetInfo) -> str:
    return f"{info.num_classes} classes" if info.has_labels else "no labels"


if __name__ == "__main__":
    sys.exit(main())
