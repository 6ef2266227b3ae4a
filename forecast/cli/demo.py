"""Run the whole chain on built-in synthetic data: the worked example of the docs.

Stages, each a public subcommand with its config in configs/demo/:

  1. forecast synth   ERA5-style NetCDF from a forced shallow-water model (32x64)
  2. forecast ingest  the NetCDF files into a training store, with Dask
  3. forecast train   a small SFNO (and with --all an AFNO to compare)
  4. forecast run     a 16-member ensemble from several initial times, 5 days,
                      written as Zarr and as NetCDF
  5. forecast score   against the truth, persistence and climatology, with plots

Finally it prints where each file is, the skill table and the one command
that opens the forecast in xarray. Stages whose output already exists are
skipped (delete the work directory, or pass --fresh, to start again).
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import time as wallclock
from pathlib import Path

from forecast.cli.config import CommandConfig, option
from forecast.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "demo"
SHARED_CARTOPY = Path(__file__).resolve().parents[3] / "shared" / "data" / "cartopy"


class Config(CommandConfig):
    """Options of ``forecast demo``."""

    workdir: str = option("work/demo", "directory for every file the demo writes")
    all: bool = option(False, "also train an AFNO and forecast with it, to compare")
    fresh: bool = option(False, "delete the work directory first")
    configs: str = option(
        str(CONFIG_DIR), "directory of the stage configs (default configs/demo of this checkout)"
    )


def _stage(title: str, argv: list[str], done: Path) -> float:
    """Run one subcommand unless it finished before; ``done`` is its product."""
    from forecast.cli.main import main

    marker = done.parent / f".{done.name}.done"
    print(f"\n== {title}\n$ forecast {' '.join(argv)}", flush=True)
    if marker.exists() and done.exists():
        print(f"   (already there: {done})")
        return 0.0
    began = wallclock.perf_counter()
    code = main(argv)
    if code != 0:
        raise SystemExit(code)
    marker.touch()
    seconds = wallclock.perf_counter() - began
    print(f"   {seconds:.0f} s", flush=True)
    return seconds


def run(args: Config) -> int:
    """Run ``forecast demo``."""
    # Offline checkouts carry Natural Earth coastlines beside the repository (../shared/data/cartopy);
    # cartopy reads CARTOPY_DATA_DIR when it is imported.
    if "CARTOPY_DATA_DIR" not in os.environ and SHARED_CARTOPY.is_dir():
        os.environ["CARTOPY_DATA_DIR"] = str(SHARED_CARTOPY)
    # With the netCDF4 and pyproj wheels of this release, importing pyproj (through cartopy)
    # after NetCDF I/O in the same process aborts the interpreter at exit; the demo writes
    # NetCDF before it draws maps, so cartopy is loaded first.
    import cartopy.crs  # noqa: F401

    configs = Path(args.configs)
    needed = ["synth.yaml", "ingest.yaml", "train.yaml", "run.yaml", "score.yaml"] + (
        ["train_afno.yaml"] if args.all else []
    )
    missing = [name for name in needed if not (configs / name).exists()]
    if missing:
        raise ConfigError(
            f"demo configs missing: {', '.join(missing)}",
            path=configs,
            hint="run from a source checkout or pass --configs DIR",
        )
    work = Path(args.workdir)
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    synth, store, plots = work / "synth", work / "store.zarr", work / "plots"
    began = wallclock.perf_counter()
    timings = {}
    timings["synth"] = _stage(
        "1/5 synthesise ERA5-style NetCDF",
        ["synth", str(synth), "--config", str(configs / "synth.yaml")],
        done=synth,
    )
    sources = sorted(glob.glob(str(synth / "*.nc")))
    timings["ingest"] = _stage(
        "2/5 ingest into a training store",
        ["ingest", *sources, "--out", str(store), "--config", str(configs / "ingest.yaml")],
        done=store,
    )
    models = [("sfno", "train.yaml")] + ([("afno", "train_afno.yaml")] if args.all else [])
    for name, config in models:
        run_dir = work / name
        timings[f"train {name}"] = _stage(
            f"3/5 train {name.upper()}",
            [
                "train",
                "--config",
                str(configs / config),
                "--data",
                str(store),
                "--out",
                str(run_dir),
            ],
            done=run_dir / "best.ckpt",
        )
    outputs = []
    for name, _ in models:
        for suffix in (".zarr", ".nc"):
            out = work / f"forecast_{name}{suffix}"
            outputs.append(out)
            timings[f"run {name} {suffix}"] = _stage(
                f"4/5 ensemble forecast with {name.upper()} -> {out.name}",
                [
                    "run",
                    "--config",
                    str(configs / "run.yaml"),
                    "--checkpoint",
                    str(work / name / "best.ckpt"),
                    "--data",
                    str(store),
                    "--out",
                    str(out),
                ],
                done=out,
            )
    scores = []
    for name, _ in models:
        score_file = work / f"scores_{name}.nc"
        scores.append(score_file)
        timings[f"score {name}"] = _stage(
            f"5/5 score {name.upper()} against truth, persistence and climatology",
            [
                "score",
                str(work / f"forecast_{name}.zarr"),
                "--truth",
                str(store),
                "--out",
                str(score_file),
                "--plots",
                str(plots / name),
                "--config",
                str(configs / "score.yaml"),
            ],
            done=score_file,
        )
    _summary(work, store, outputs, scores, plots, wallclock.perf_counter() - began)
    return 0


def _summary(
    work: Path, store: Path, outputs: list[Path], scores: list[Path], plots: Path, seconds: float
) -> None:

    print("\n== summary")
    print(f"store:      {store}")
    for path in outputs:
        print(f"forecast:   {path}")
    for path in scores:
        print(f"scores:     {path}")
    print(f"plots:      {plots}/")
    from forecast.scoring.scores_file import open_scores

    for path in scores:
        table = _skill_table(open_scores(path))
        print(
            f"\nRMSE at 24 h and 120 h lead ({path.stem.removeprefix('scores_').upper()}; global; lower is better):"
        )
        print(table)
    first = outputs[0]
    print("\nopen the forecast in xarray:")
    print(f"  python -c \"import xarray as xr; print(xr.open_zarr('{first}'))\"")
    print(f"\ndemo finished in {seconds / 60:.1f} min", file=sys.stderr)


def _skill_table(ds) -> str:
    import numpy as np

    rmse = ds["rmse"]
    if "region" in rmse.dims:
        rmse = rmse.isel(region=0)
    leads = rmse["lead_time"].values
    hours = (
        (leads / np.timedelta64(1, "h")).astype(int)
        if np.issubdtype(leads.dtype, np.timedelta64)
        else np.asarray(leads)
    )
    picks = [h for h in (24, 120) if h in hours]
    models = [str(m) for m in rmse["model"].values]
    header = f"{'channel':<8}" + "".join(
        f"{m + ' ' + str(h) + 'h':>22}" for h in picks for m in models
    )
    lines = [header]
    for channel in rmse["channel"].values:
        row = f"{channel!s:<8}"
        for h in picks:
            lead = leads[list(hours).index(h)]
            for model in models:
                value = float(rmse.sel(channel=channel, model=model, lead_time=lead))
                row += f"{value:>22.4g}"
        lines.append(row)
    return "\n".join(lines)
