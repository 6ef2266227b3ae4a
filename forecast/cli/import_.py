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

import sys
from typing import Literal

from forecast.cli.config import CommandConfig, option
from forecast.cli.progress import HIDE_HELP, shows_progress

#: Published model families (``forecast.importers.IMPORTERS``; listed here so ``--help`` stays fast).
MODELS = ("fourcastnet-v2-small", "fourcastnet")
#: Options that are publisher's defaults the weights do not record (None: the publisher's value).
OPTIONS = (
    "grid",
    "scale_factor",
    "hard_thresholding_fraction",
    "sparsity_threshold",
    "complex_activation",
)


class Config(CommandConfig):
    """Options of ``forecast import``."""

    model: Literal["fourcastnet-v2-small", "fourcastnet"] = option(
        help=f"one of {', '.join(MODELS)}", metavar="MODEL", positional=True
    )
    weights: str = option(
        help="the publisher's weights (weights.tar, backbone.ckpt)", metavar="FILE"
    )
    means: str = option(help="global_means.npy, shape (1, C, 1, 1)", metavar="FILE")
    stds: str = option(help="global_stds.npy, shape (1, C, 1, 1)", metavar="FILE")
    out: str = option(help="the checkpoint to write", metavar="CKPT")
    grid: str | None = option(
        None,
        "fourcastnet: data grid, equiangular with poles (publisher's default 721x1440)",
        metavar="NLATxNLON",
    )
    scale_factor: int | None = option(
        None,
        "fourcastnet-v2-small: inner grid is NLAT//S x NLON//S (publisher's default 6)",
        metavar="S",
    )
    hard_thresholding_fraction: float | None = option(
        None, "fraction of the spectral/Fourier modes kept (publisher's default 1.0)", metavar="F"
    )
    sparsity_threshold: float | None = option(
        None,
        "fourcastnet: soft-shrinkage lambda of the AFNO filter (publisher's default 0.01)",
        metavar="LAMBDA",
    )
    complex_activation: Literal["real", "cartesian"] | None = option(
        None, "fourcastnet-v2-small: real or cartesian complex ReLU (publisher's default real)"
    )
    overwrite: bool = option(False, "replace an existing checkpoint written by this software")
    no_progress: bool = option(False, HIDE_HELP, flags=("--no-progress", "--quiet"))


def _check_out(path, overwrite: bool, inputs: list[str]) -> None:
    from forecast.errors import DataError
    from forecast.overwrite import check_replaceable

    if path.exists() and not overwrite:
        raise DataError(
            "output exists",
            path=path,
            hint="choose another --out, or pass --overwrite to replace it",
        )
    check_replaceable(
        path, inputs=inputs, kinds=("checkpoint",), flag="--out" if not overwrite else "--overwrite"
    )


def run(args: Config) -> int:
    """Run ``forecast import``; returns the exit code."""
    import time
    from pathlib import Path

    from tqdm.auto import tqdm

    from forecast.checkpoint import save_checkpoint
    from forecast.errors import ConfigError, DataError
    from forecast.importers import convert_published, get_importer
    from forecast.locking import lock
    from forecast.time import format_step

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
    with lock(out, "forecast import"):
        _check_out(
            out, args.overwrite, [str(p) for p in (args.weights, args.means, args.stds) if p]
        )
        with tqdm(
            total=2,
            desc=f"import {args.model}",
            unit="stage",
            disable=not shows_progress(args.no_progress),
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
        f"step {format_step(stepper.step)}, {parameters:,} parameters, in {time.perf_counter() - started:.1f} s",
        file=sys.stdout,
    )
    return 0
