"""Cross-check: WeatherBench2's own ``evaluate_in_memory`` on a ``--layout wb2`` forecast, against ``forecast score``.

WeatherBench2 is not on PyPI, so this is not a test: give it a checkout of
github.com/google-research/weatherbench2 (``--weatherbench2 PATH``, the
folder holding the ``weatherbench2`` package). Its ``evaluation.py`` imports
Apache Beam and xarray-beam only for its Beam pipeline classes, which
``evaluate_in_memory`` does not use; they are stood in for by empty modules.

On WeatherBench2's 64x33 grid with poles (a WeatherBench2-style 1.5-degree
source ingested to ``--grid 33x64``, a briefly trained SFNO, 7 inits x 10
steps, deterministic and 4 members), the obs and climatology are the store
written out in WeatherBench2's layout, and WeatherBench2 reads the forecast
with no renames (``by_init=True``). Prints the largest relative difference
per metric, channel and forecast.

Usage::

    .venv/bin/python benchmarks/wb2_crosscheck.py --weatherbench2 PATH [--workdir /tmp/forecast-wb2-crosscheck]
"""

from __future__ import annotations

import argparse
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
#: channel -> (WeatherBench2 variable, level)
NAMES = {
    "z500": ("geopotential", 500),
    "z850": ("geopotential", 850),
    "t500": ("temperature", 500),
    "t850": ("temperature", 850),
    "t2m": ("2m_temperature", None),
}


class _Anything:
    """Stands in for any Beam object at import time."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Anything()


def _stub(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = __file__

    def attribute(key: str):
        if key.startswith("__"):
            raise AttributeError(key)
        return _Anything

    module.__getattr__ = attribute
    return module


def to_wb2(fields: xr.DataArray) -> xr.Dataset:
    """A store array ``(..., channel, latitude, longitude)`` in WeatherBench2's layout."""
    grouped: dict[str, list[xr.DataArray]] = {}
    for channel, (name, level) in NAMES.items():
        field = fields.sel(channel=channel, drop=True)
        grouped.setdefault(name, []).append(
            field if level is None else field.expand_dims(level=[level])
        )
    ds = xr.Dataset({k: xr.concat(v, "level") if len(v) > 1 else v[0] for k, v in grouped.items()})
    return ds.isel(latitude=slice(None, None, -1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weatherbench2", required=True, help="folder holding the weatherbench2 package"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/forecast-wb2-crosscheck"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    sys.modules.setdefault("apache_beam", _stub("apache_beam"))
    sys.modules.setdefault("xarray_beam", _stub("xarray_beam"))
    sys.modules["apache_beam"].PTransform = type("PTransform", (), {})
    sys.path[:0] = [args.weatherbench2, str(REPO)]
    from weatherbench2 import config, evaluation, metrics, regions

    from forecast.cli.main import main as forecast
    from forecast.scoring.score import score_files
    from tests.integration.test_wb2_grid_chain import wb2_source

    work = args.workdir
    work.mkdir(exist_ok=True, parents=True)
    store = work / "store.zarr"
    if not store.exists():
        wb2_source(work / "source.zarr", times=48)
        assert (
            forecast(
                [
                    "ingest",
                    str(work / "source.zarr"),
                    "--out",
                    str(store),
                    "--grid",
                    "33x64",
                    "--no-progress",
                ]
            )
            == 0
        )
        assert forecast([
            "train", "--data", str(store), "--model", "sfno", "--out", str(work / "run"),
            "--hparams", "embed_dim=8,num_layers=1", "--max-steps", "20", "--batch-size", "2",
            "--workers", "0", "--device", "cpu", "--val-fraction", "0.2", "--val-every", "20",
            "--val-samples", "2", "--no-progress",
        ]) == 0  # fmt: skip
    for members, name in ((1, "det"), (4, "ens")):
        if not (work / f"fc_{name}.zarr").exists():
            assert forecast([
                "run", "--checkpoint", str(work / "run" / "best.ckpt"), "--data", str(store),
                "--init", "2020-01-03T00/2020-01-06T00/12h", "--steps", "10",
                "--members", str(members), "--perturbation", "gaussian" if members > 1 else "none",
                "--layout", "wb2", "--out", str(work / f"fc_{name}.zarr"), "--no-progress",
            ]) == 0  # fmt: skip
    opened = xr.open_zarr(store)
    to_wb2(opened["data"].load()).to_zarr(work / "obs.zarr", mode="w")
    to_wb2(opened["climatology"].load()).to_zarr(work / "climatology.zarr", mode="w")
    climatology = xr.open_zarr(work / "climatology.zarr")
    suites = {
        "det": (
            {"mse": metrics.MSE(), "acc": metrics.ACC(climatology=climatology),
             "bias": metrics.Bias(), "mae": metrics.MAE()},
            [("rmse", "mse", np.sqrt), ("acc", "acc", None), ("bias", "bias", None), ("mae", "mae", None)],
        ),
        "ens": (
            {"ens_mse": metrics.EnsembleMeanMSE(), "crps": metrics.CRPS(), "var": metrics.EnsembleVariance()},
            [("rmse", "ens_mse", np.sqrt), ("crps", "crps", None), ("spread", "var", np.sqrt)],
        ),
    }  # fmt: skip
    for name, (eval_metrics, pairs) in suites.items():
        data = config.Data(
            selection=config.Selection(
                variables=["geopotential", "temperature", "2m_temperature"],
                levels=[500, 850],
                time_slice=slice("2020-01-03T00", "2020-01-06T00"),
            ),
            paths=config.Paths(
                forecast=str(work / f"fc_{name}.zarr"),
                obs=str(work / "obs.zarr"),
                output_dir=str(work),
                climatology=str(work / "climatology.zarr"),
            ),
            by_init=True,
        )
        evals = {name: config.Eval(metrics=eval_metrics, regions={"global": regions.SliceRegion()})}
        evaluation.evaluate_in_memory(data, evals)
        theirs = xr.open_dataset(work / f"{name}.nc").load()
        ours, _, _ = score_files(work / f"fc_{name}.zarr", store, spectra=False, baselines=())
        for channel in ("z500", "t850", "t2m"):
            variable, level = NAMES[channel]
            for our_name, their_name, finish in pairs:
                value = theirs[variable].sel(metric=their_name, region="global")
                if level is not None:
                    value = value.sel(level=level)
                value = value.values if finish is None else finish(value.values)
                mine = ours[our_name].sel(model="forecast", channel=channel, region="global").values
                relative = float(np.nanmax(np.abs(value - mine) / np.maximum(np.abs(mine), 1e-12)))
                print(f"{name} {channel:5s} {our_name:7s} max relative difference {relative:.1e}")
                if (channel, our_name) == ("t2m", "acc"):
                    print(
                        f"  t2m ACC by lead, ours: {np.round(mine, 3)}\n  WeatherBench2's:    {np.round(value, 3)}"
                    )


if __name__ == "__main__":
    main()
