"""Prepare datasets for hpcgan as schema-1 HDF5 files (layout: docs/design.md, section 5).

    python -m data_prep synth   --kind {digits,grf,grf3d} --out FILE.h5 [--n N] [--size S]
                                [--seed K]
    python -m data_prep convert --input PATH [PATH ...] --out FILE.h5 [--size S] [--channels 1|3]
                                [--layout L] [--shape D,H,W|H,W|L] [--conditions KEY,...]
                                [--symmetry auto|none|box] [--periodic AXES] [--flips AXES]
                                [--rotations I:J,...] [--chunk-samples N]
                                [--compression none|lzf|gzip] [...]
    mpirun -np N python -m data_prep convert ...        (N ranks decode and write; same file)
    python -m data_prep verify  FILE.h5

Exit status 0 when done; bad input prints one line `data_prep: error: ...` on stderr (once,
under mpirun) and exits 2; an interrupt exits 130 (hpcgan.errors maps them, as for every
hpcgan command).
"""

from __future__ import annotations

import argparse
import sys

from data_prep import signals
from data_prep.convert import Options, convert
from data_prep.inputs import FORMATS
from data_prep.output import check_output
from data_prep.volumes import LAYOUTS, parse_shape
from hpcgan.comm import control
from hpcgan.data.format import DatasetInfo, read_info
from hpcgan.data.verify import scan
from hpcgan.data.write import write_dataset
from hpcgan.errors import ArgumentParser, Command, UserError, run_command

# kind -> (default --n, default --size, schema kind); None means every sample.
_SYNTH_DEFAULTS = {
    "digits": (None, 32, "image"),
    "grf": (4096, 64, "field"),
    "grf3d": (2048, 32, "field"),
}


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; bad input of any kind is one stderr line and exit status 2."""

    def body(command: Command) -> int:
        args = _parser().parse_args(argv)
        return args.run(args, command)

    return run_command("data_prep", body)


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="data_prep", description="Prepare datasets for hpcgan as schema-1 HDF5 files."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("synth", help="generate a built-in synthetic dataset")
    p.add_argument(
        "--kind",
        required=True,
        choices=sorted(_SYNTH_DEFAULTS),
        help="digits: scikit-learn's handwritten digits with labels (uint8 images); "
        "grf: lognormal Gaussian random fields, P(k) ~ k^-3 (float32 fields); "
        "grf3d: the same as volumes [N, 1, S, S, S]",
    )
    p.add_argument("--out", required=True, metavar="FILE.h5", help="output HDF5 file")
    p.add_argument(
        "--n",
        type=int,
        help="number of samples (digits: at most 1797, default all; grf: default 4096; "
        "grf3d: default 2048)",
    )
    p.add_argument(
        "--size",
        type=int,
        help="height and width (and depth for grf3d), a power of two >= 8 "
        "(default: digits 32, grf 64, grf3d 32)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of grf, grf3d (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(run=_synth)

    p = commands.add_parser(
        "convert",
        help="convert images or arrays (folders, .npy/.npz, IDX, HDF5) into one dataset file",
        description="Convert images or arrays into one schema-1 dataset file. Run it under "
        "mpirun -np N to decode and write with N ranks: the file is the same. Labels come from "
        "class folders (DIR/CLASS/...), an IDX label file, or an npz/HDF5 array (--labels-key, "
        "default 'labels' when present).",
    )
    p.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="PATH",
        help="folders of images (searched recursively; PNG, JPEG, TIFF, BMP), image files, "
        ".npy, .npz, IDX (*-ubyte, optionally .gz) or HDF5 files, converted in the order given",
    )
    p.add_argument("--out", required=True, metavar="FILE.h5", help="output HDF5 file")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="format of the inputs (default auto: by content, then by extension)",
    )
    p.add_argument(
        "--key",
        help="npz array or HDF5 dataset holding the samples (default: the only one of rank 3 or "
        "4, else of rank 5; with --shape, the only one of shape (N, D*H*W))",
    )
    p.add_argument(
        "--labels-key", metavar="KEY", help="npz array or HDF5 dataset holding integer labels"
    )
    p.add_argument("--no-labels", dest="labels", action="store_false", help="drop all labels")
    p.add_argument(
        "--layout",
        choices=tuple(LAYOUTS),
        default="auto",
        help="axis order of arrays: nchw, nhwc (4-d images and maps), ndhw (4-d volumes, one "
        "channel), ncdhw, ndhwc (5-d volumes; ndhwc is Keras's). Default auto: 4-d arrays are "
        "images with channels on the shorter of axes 1 and 3; 5-d arrays are volumes with "
        "channels on the shorter of axes 1 and 4; that axis must hold at most 4 channels, else "
        "the array (e.g. (12, 32, 32, 32)) is refused as ambiguous. 3DGAN files' 4-d ECAL is "
        "read as ndhw",
    )
    p.add_argument(
        "--shape",
        type=_shape_arg,
        metavar="D,H,W",
        help="reshape flat per-sample vectors (N, V) to volumes D x H x W (or maps H,W, or 1D "
        "vectors L); V must equal D*H*W. CaloChallenge files (showers + incident_energies) "
        "need none: 368 and 533 voxels stay vectors, 6480 become 45,16,9 and 40500 45,50,18",
    )
    p.add_argument(
        "--conditions",
        type=_keys_arg,
        metavar="KEY[,KEY...]",
        help="npz arrays or HDF5 datasets of continuous conditions, each (N,), (N, 1) or (N, K), "
        "stored as /conditions in the file's units. Recognised without it: CaloChallenge's "
        "incident_energies (incident_energy, MeV), 3DGAN's energy (GeV) and theta (rad)",
    )
    p.add_argument(
        "--symmetry",
        choices=("auto", "none", "box"),
        default="auto",
        help="exact symmetries of the samples (docs/data.md): none; box (periodic box: every "
        "axis periodic and flippable, 90-degree rotations between equal sides); auto (default): "
        "CaloChallenge grids' angle axis (1) periodic, anything else none",
    )
    p.add_argument(
        "--periodic",
        metavar="AXES",
        help="spatial axes that wrap around, e.g. 1 or 0,1 (or all, none); replaces that part "
        "of --symmetry",
    )
    p.add_argument(
        "--flips", metavar="AXES", help="spatial axes whose reversal is exact, e.g. 0,1 (or all)"
    )
    p.add_argument(
        "--rotations",
        metavar="I:J,...",
        help="planes of equal sides with exact 90-degree rotations, e.g. 0:1 (or none)",
    )
    p.add_argument(
        "--size",
        type=int,
        metavar="S",
        help="resize samples to S x S (images: Lanczos when shrinking, bicubic when enlarging; "
        "fields: area average, bilinear); volumes to S x S x S (area average down, trilinear "
        "up, per axis)",
    )
    p.add_argument(
        "--crop", action="store_true", help="centre-crop to a square (volumes: a cube) first"
    )
    p.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        help="convert to 1 (luma) or 3 channels (default: as the inputs; 3 if grey and colour mix)",
    )
    p.add_argument(
        "--dtype",
        choices=("uint8", "float32"),
        help="uint8 (kind image) or float32 (kind field, physical values kept); "
        "default uint8 if every input is 8-bit",
    )
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
        help="HDF5 compression of /images (default none: fastest to write and read)",
    )
    p.add_argument("--max-samples", type=int, metavar="N", help="convert at most N samples")
    p.add_argument(
        "--shuffle", action="store_true", help="store samples in a random order (see --seed)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --shuffle (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(run=_convert)

    p = commands.add_parser("verify", help="check a dataset file: schema, every value, statistics")
    p.add_argument("file", metavar="FILE.h5", help="dataset to check")
    p.set_defaults(run=_verify)
    return parser


def _synth(args: argparse.Namespace, command: Command) -> int:
    from hpcgan.data import synth  # PIL, scikit-learn, torch: only for this command

    out = check_output(args.out, args.overwrite)
    default_n, default_size, kind = _SYNTH_DEFAULTS[args.kind]
    n = default_n if args.n is None else args.n
    size = default_size if args.size is None else args.size
    if n is not None and n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    if args.kind == "digits":
        images, labels = synth.digits(size)
        images, labels = images[:n], labels[:n]
        source = synth.DIGITS_SOURCE
    else:
        ndim = 3 if args.kind == "grf3d" else 2
        images, labels = synth.grf(n, size, seed=args.seed, ndim=ndim), None
        source = synth.grf_source(seed=args.seed, ndim=ndim)
    symmetry = synth.symmetry(args.kind, images.shape[2:])
    info = write_dataset(out, images, labels, kind=kind, source=source, symmetry=symmetry)
    stats = info.stats
    _wrote(
        info,
        f"min {stats['min']:.4g} max {stats['max']:.4g} mean {stats['mean']:.4g} "
        f"std {stats['std']:.4g}, {_labels(info)}",
    )
    return 0


def _convert(args: argparse.Namespace, command: Command) -> int:
    options = Options(
        inputs=args.input,
        out=args.out,
        fmt=args.format,
        key=args.key,
        labels_key=args.labels_key,
        layout=args.layout,
        shape=args.shape,
        labels=args.labels,
        size=args.size,
        crop=args.crop,
        channels=args.channels,
        dtype=args.dtype,
        chunk_samples=args.chunk_samples,
        compression=None if args.compression == "none" else args.compression,
        max_samples=args.max_samples,
        shuffle=args.shuffle,
        seed=args.seed,
        overwrite=args.overwrite,
        conditions=args.conditions,
        symmetry=args.symmetry,
        periodic=args.periodic,
        flips=args.flips,
        rotations=args.rotations,
    )
    with signals.stoppable():
        comm = command.comm = control()  # an error on one rank of several ends them all
        result = convert(options, comm)
    if comm.rank == 0:
        info, seconds = result.info, max(result.seconds, 1e-9)
        megabytes = info.n * info.sample_nbytes / 1e6
        _wrote(
            info,
            f"{_labels(info)}{_conditions(info)}, in {seconds:.2f} s "
            f"({info.n / seconds:.0f} samples/s, {megabytes / seconds:.1f} MB/s, "
            f"{result.ranks} rank(s))",
        )
    return 0


def _verify(args: argparse.Namespace, command: Command) -> int:
    summary = scan(args.file)
    info = read_info(args.file)
    stats = summary["stats"]
    chunk_mib = info.chunk_samples * info.sample_nbytes / 2**20
    checked = summary["checksums"]
    print(f"{info.path}: ok")
    print(
        f"  samples   {info.n} x {_shape(info)} {info.dtype} ({info.kind}, source: {info.source})"
    )
    print(
        f"  values    min {stats['min']:.6g} max {stats['max']:.6g} "
        f"mean {stats['mean']:.6g} std {stats['std']:.6g}, all finite"
    )
    if info.channels > 1:
        channels = summary["channel_stats"]
        for c in range(info.channels):
            print(
                f"  channel {c} min {channels['channel_min'][c]:.6g} "
                f"max {channels['channel_max'][c]:.6g} mean {channels['channel_mean'][c]:.6g} "
                f"std {channels['channel_std'][c]:.6g}"
            )
    print(f"  labels    {_labels(info)}")
    if info.has_conditions:
        print(f"  conditions {_ranges(info)}, all finite, checksum matches")
    print(f"  symmetry  {info.symmetry.to_json()}")
    print(
        f"  chunks    {info.chunk_samples} samples ({chunk_mib:.2f} MiB), "
        f"compression {info.compression or 'none'}"
    )
    print(
        f"  checksums {checked} chunk CRC-32s match"
        if checked is not None
        else "  checksums none stored (file written by an older data_prep)"
    )
    return 0


def _shape_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_shape(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _keys_arg(text: str) -> tuple[str, ...]:
    keys = tuple(part.strip() for part in text.split(","))
    if not all(keys):
        raise argparse.ArgumentTypeError(f"expected KEY[,KEY...], got {text!r}")
    return keys


def _conditions(info: DatasetInfo) -> str:
    """`, conditions incident_energy 1000..1e+06 MeV` (empty without conditions)."""
    return f", conditions {_ranges(info)}" if info.has_conditions else ""


def _ranges(info: DatasetInfo) -> str:
    """Each condition's name, range and unit: `energy 10..500 GeV, theta 1..2.1 rad`."""
    lo, hi = info.condition_stats["min"], info.condition_stats["max"]
    return ", ".join(
        f"{name} {a:.4g}..{b:.4g}" + (f" {unit}" if unit else "")
        for name, unit, a, b in zip(info.condition_names, info.condition_units, lo, hi)
    )


def _wrote(info: DatasetInfo, details: str) -> None:
    print(f"wrote {info.path}: {info.n} x {_shape(info)} {info.dtype} {info.kind}, {details}")


def _shape(info: DatasetInfo) -> str:
    return "x".join(map(str, info.shape))


def _labels(info: DatasetInfo) -> str:
    return f"{info.num_classes} classes" if info.has_labels else "no labels"


if __name__ == "__main__":
    sys.exit(main())
