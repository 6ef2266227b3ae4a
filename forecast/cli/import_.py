"""Turn published FourCastNet weights into a checkpoint for 'forecast run'.

MODEL is fourcastnet-v2-small (NVIDIA's SFNO with the non-linear filter, 73
channels on the 721x1440 grid) or fourcastnet (v1, AFNO, 20 or 26 channels on
the 720 northernmost rows of the 0.25-degree grid; the release is told by the
weights). The files are the ones ECMWF's ai-models plugins download. The
weights are read without running pickled code; a file whose keys or shapes do
not fit the architecture is refused, naming the first mismatch. What the
weights do not record is taken from the publisher (the flags below override it).

examples:
  forecast import fourcastnet-v2-small --weights weights.tar --means global_means.npy --stds global_stds.npy --out fcnv2_small.ckpt
  forecast import fourcastnet --weights backbone.ckpt --means global_means.npy --stds global_stds.npy --out fcn.ckpt
  forecast run --checkpoint fcnv2_small.ckpt --data era5.zarr --init latest --steps 28 --members 16 --perturbation grf --out fc.zarr
"""

from __future__ import annotations

import argparse
import sys

#: Published model families (``forecast.importers.IMPORTERS``; listed here so ``--help`` stays fast).
MODELS = ("fourcastnet-v2-small", "fourcastnet")
#: Flags of the publisher's defaults that the weights do not record: option -> (type, metavar, help).
OPTIONS = {
    "grid": (str, "NLATxNLON", "fourcastnet: data grid, equiangular with poles (default 721x1440)"),
    "scale_factor": (int, "S", "fourcastnet-v2-small: inner grid is NLAT//S x NLON//S (default 6)"),
    "hard_thresholding_fraction": (
        float,
        "F",
        "fraction of the spectral/Fourier modes kept (default 1.0)",
    ),
    "sparsity_threshold": (
        float,
        "LAMBDA",
        "fourcastnet: soft-shrinkage lambda of the AFNO filter (default 0.01)",
    ),
    "complex_activation": (
        str,
        "real|cartesian",
        "fourcastnet-v2-small: real or cartesian complex ReLU (default real)",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``forecast import``."""
    parser.add_argument(
        "model", choices=MODELS, metavar="MODEL", help=f"one of {', '.join(MODELS)}"
    )
    parser.add_argument(
        "--weights",
        required=True,
        metavar="FILE",
        help="the publisher's weights (weights.tar, backbone.ckpt)",
    )
    parser.add_argument(
        "--means", required=True, metavar="FILE", help="global_means.npy, shape (1, C, 1, 1)"
    )
    parser.add_argument(
        "--stds", required=True, metavar="FILE", help="global_stds.npy, shape (1, C, 1, 1)"
    )
    parser.add_argument("--out", required=True, metavar="CKPT", help="the checkpoint to write")
    for name, (kind, metavar, text) in OPTIONS.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=kind,
            default=None,
            metavar=metavar,
            help=text,
        )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing checkpoint written by this software",
    )
    parser.add_argument(
        "--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bar"
    )


def _check_out(path, overwrite: bool) -> None:
    from forecast.checkpoint import read_metadata
    from forecast.errors import CheckpointError, DataError

    if not path.exists():
        return
    if not overwrite:
        raise DataError(
            "output exists",
            path=path,
            hint="choose another --out, or pass --overwrite to replace it",
        )
    try:
        read_metadata(path)
    except CheckpointError as err:
        raise DataError(
            "output exists and is not a checkpoint of this software; --overwrite replaces only those",
            path=path,
            hint="choose another --out",
        ) from err


def run(args: argparse.Namespace) -> int:
    """Run ``forecast import``; returns the exit code."""
    import time
    from pathlib import Path

    from tqdm.auto import tqdm

    from forecast.checkpoint import save_checkpoint
    from forecast.errors import ConfigError, DataError
    from forecast.importers import convert_published, get_importer
    from forecast.time import format_step
    from inference.schedule import RunLock

    started = time.perf_counter()
    importer = get_importer(args.model)
    accepted = {option.name for option in importer.options}
    given = {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}
    wrong = [f"--{name.replace('_', '-')}" for name in given if name not in accepted]
    if wrong:
        raise ConfigError(
            f"{', '.join(wrong)} does not apply to {args.model}",
            hint=f"it takes {', '.join('--' + n.replace('_', '-') for n in sorted(accepted))}",
        )
    out = Path(args.out)
    if not out.parent.is_dir():
        raise DataError("folder does not exist", path=out.parent, hint="create it first")
    with RunLock(out):
        _check_out(out, args.overwrite)
        with tqdm(
            total=2,
            desc=f"import {args.model}",
            unit="stage",
            disable=args.no_progress,
            leave=False,
        ) as bar:
            imported = convert_published(args.model, args.weights, args.means, args.stds, given)
            bar.update(1)
            save_checkpoint(out, imported.stepper, provenance=imported.provenance)
            bar.update(1)
    stepper = imported.stepper
    parameters = sum(p.numel() for p in stepper.model.parameters())
    print(
        f"wrote {out}: {args.model}, {len(stepper.channels)} channels, {stepper.grid.describe()}"
        f"{' (model sees all but the south-pole row)' if stepper.drop_south_pole else ''}, "
        f"step {format_step(stepper.step_size)}, {parameters:,} parameters, in {time.perf_counter() - started:.1f} s",
        file=sys.stdout,
    )
    return 0
