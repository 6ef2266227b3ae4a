"""The output layouts (default, wb2, cdo) as the field's tools read them.

One small ensemble (2 inits x 3 members x 3 steps on 16x32) is written in
every layout and format; the tests check each against what its readers need:
the CF checkers at the declared version, Iris, CDO and NCO where installed,
WeatherBench2's conventions (read from its schema.py / evaluation.py /
metrics.py: dims, names, dtypes, orientation), and ``forecast score``, which
must read all three back to the same numbers.
"""

from __future__ import annotations

import os
import subprocess

import netCDF4
import numpy as np
import pytest
import xarray as xr

from forecast.errors import ConfigError, DataError
from forecast.grid import Grid
from forecast.scoring.layouts import open_forecast
from inference.initial import parse_init_spec
from inference.schedule import lock_path, progress_dir
from inference.writers import COMPRESSIONS, LAYOUTS, writer_for
from inference.writers.cf import cell_bounds
from tests.cf_tools import cfchecks_messages, compliance_errors, iris_cubes, tool
from tests.inference.conftest import CHANNELS, run

INITS = "2020-01-01T00/2020-01-01T06/6h"
STEPS = 3
OUTPUTS = {
    "default.zarr": "default",
    "default.nc": "default",
    "wb2.zarr": "wb2",
    "wb2.nc": "wb2",
    "cdo": "cdo",
}
#: The one error the compliance-checker reports on the layouts whose `time` dim is the
#: initialisation (docs/formats.md, "CF checkers": a dim named `time` must have
#: standard_name `time` is the checker's rule, not CF's).
TIME_NAME_RULE = (
    "Coordinate variable 'time' should have standard_name='time', found: 'forecast_reference_time'"
)


#: The environment of a shell: importing netCDF4 points HDF5_PLUGIN_PATH at its own zstd plugin.
SHELL = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}


def _run(stepper, store, out, **kwargs):
    options = dict(
        members=3,
        batch_size=2,
        perturbation="gaussian",
        seed=3,
        model_name="sfno",
        checkpoint_digest="abc",
        store="store.zarr",
    )
    options.update(kwargs)
    return run(
        stepper,
        store,
        parse_init_spec(INITS, "standard"),
        options.pop("steps", STEPS),
        out,
        **options,
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory, store_path, stepper):
    from forecast.store import open_store

    store = open_store(store_path)
    root = tmp_path_factory.mktemp("layouts")
    for name, layout in OUTPUTS.items():
        result = _run(stepper, store, root / name, layout=layout)
        assert result.status == "finished"
    return root


def test_every_layout_reads_back_to_the_same_forecast(written):
    reference = xr.open_zarr(written / "default.zarr")
    assert np.isfinite(reference["z500"].values).all()
    for name in OUTPUTS:
        back = open_forecast(written / name)
        assert list(back.data_vars)[-4:] == sorted(CHANNELS), name  # one order everywhere
        for channel in CHANNELS:
            assert back[channel].dims == ("time", "lead_time", "member", "latitude", "longitude")
            np.testing.assert_array_equal(back[channel].values, reference[channel].values)
        np.testing.assert_array_equal(back["latitude"].values, reference["latitude"].values)
        np.testing.assert_array_equal(back["valid_time"].values, reference["valid_time"].values)
        np.testing.assert_array_equal(back["lead_time"].values, reference["lead_time"].values)


def test_no_lock_progress_or_partial_files_after_a_finished_run(written):
    for name in OUTPUTS:
        out = written / name
        assert not lock_path(out).exists(), name
        assert not progress_dir(out).exists(), name
        assert not out.with_name(out.name + ".partial").exists(), name
    leftovers = sorted(p.name for p in written.iterdir() if not p.name.endswith(".manifest.json"))
    assert leftovers == sorted(OUTPUTS)


def test_default_layout_cf_metadata(written):
    with netCDF4.Dataset(written / "default.nc") as nc:
        assert nc.Conventions == "CF-1.8"
        assert "forecast run" in nc.history
        for name in ("time", "lead_time", "valid_time"):
            assert nc[name].dtype == np.int32, name  # CF-1.8 has no 64-bit integers
        for name in ("latitude", "longitude", "latitude_bnds", "longitude_bnds", "pressure_500"):
            assert "_FillValue" not in nc[name].ncattrs(), name
        assert nc["member"].units == "1" and nc["member"].standard_name == "realization"
        assert (nc["latitude"].axis, nc["longitude"].axis, nc["time"].axis) == ("Y", "X", "T")
        assert nc["latitude"].bounds == "latitude_bnds"
        bounds = nc["latitude_bnds"][:]
        assert bounds[0, 0] == 90.0 and bounds[-1, 1] == -90.0  # clipped at the poles
        np.testing.assert_array_equal(bounds[1:, 0], bounds[:-1, 1])  # contiguous cells
        assert nc["z500"].coordinates == "valid_time pressure_500"
        assert nc["t2m"].coordinates == "valid_time height_2m"
        assert nc["u10m"].coordinates == "valid_time height_10m"
        assert float(nc["pressure_500"][()]) == 500.0 and nc["pressure_500"].units == "hPa"
        assert float(nc["height_2m"][()]) == 2.0 and nc["height_2m"].standard_name == "height"
    ds = xr.open_zarr(written / "default.zarr")
    assert float(ds["pressure_850"]) == 850.0 and ds["height_10m"].attrs["positive"] == "up"
    assert ds["t850"].encoding["coordinates"] == "valid_time pressure_850"


def test_cell_bounds_are_clipped_and_halfway():
    grid = Grid.equiangular(5, 8)  # 90, 45, 0, -45, -90
    bounds = cell_bounds(grid.latitude, -90, 90)
    np.testing.assert_allclose(
        bounds, [[90, 67.5], [67.5, 22.5], [22.5, -22.5], [-22.5, -67.5], [-67.5, -90]], atol=1e-12
    )


@pytest.mark.parametrize("name", ["default.nc", "wb2.nc", "cdo"])
def test_compliance_checker_finds_no_errors_at_the_declared_cf_version(written, name):
    path = written / name
    files = sorted(path.glob("*.nc")) if path.is_dir() else [path]
    for file in files[:2]:
        with netCDF4.Dataset(file) as nc:
            version = nc.Conventions.removeprefix("CF-")
        errors = compliance_errors(file, version)
        if name == "cdo":  # time is the valid time there: not even the checker's naming rule trips
            assert errors == [], errors
        else:
            assert set(errors) <= {TIME_NAME_RULE}, errors


@pytest.mark.parametrize("name", ["default.nc", "wb2.nc", "cdo"])
def test_cfchecks_finds_no_errors(written, name):
    path = written / name
    file = sorted(path.glob("*.nc"))[0] if path.is_dir() else path
    messages = cfchecks_messages(file)
    assert messages["version"] == "CF-1.8"
    assert messages["ERROR"] == []
    if name == "wb2.nc":  # WeatherBench2's names 2m_temperature, 10m_u_component_of_wind
        assert (
            messages["WARN"]
            == [
                "(2.3): Variable names should begin with a letter and be "
                "composed of letters, digits and underscores"
            ]
            * 2
        )
    else:
        assert messages["WARN"] == []


def test_iris_tells_the_channels_apart(written):
    cubes = {c["var_name"]: c for c in iris_cubes(written / "default.nc")}
    assert set(cubes) == set(CHANNELS)
    assert cubes["t850"]["standard_name"] == cubes["t2m"]["standard_name"] == "air_temperature"
    assert cubes["t850"]["scalar"]["air_pressure"] == [850.0, "hPa"]
    assert cubes["t2m"]["scalar"]["height"] == [2.0, "m"]
    assert cubes["u10m"]["scalar"]["height"] == [10.0, "m"]
    assert cubes["z500"]["dims"] == [
        "forecast_reference_time",
        "forecast_period",
        "realization",
        "latitude",
        "longitude",
    ]
    member = {c["var_name"]: c for c in iris_cubes(sorted((written / "cdo").glob("*.nc"))[1])}
    assert member["t850"]["dims"] == ["time", "latitude", "longitude"]
    assert member["t850"]["scalar"]["air_pressure"] == [850.0, "hPa"]
    assert member["t850"]["scalar"]["realization"][0] == 1.0
    assert "forecast_period" in member["t850"]["aux"]


def test_wb2_layout_has_what_weatherbench2_reads(written):
    ds = xr.open_zarr(written / "wb2.zarr")
    # schema.apply_time_conventions: prediction_timedelta present -> time is the init time
    assert ds["prediction_timedelta"].dtype.kind == "m"
    assert ds["time"].attrs["standard_name"] == "forecast_reference_time"
    # metrics.REALIZATION; evaluation.make_latitude_increasing / _ensure_aligned_grid
    assert ds["geopotential"].dims == (
        "time",
        "prediction_timedelta",
        "realization",
        "level",
        "latitude",
        "longitude",
    )
    assert ds["2m_temperature"].dims == (
        "time",
        "prediction_timedelta",
        "realization",
        "latitude",
        "longitude",
    )
    assert (np.diff(ds["latitude"].values) > 0).all()
    assert list(ds["level"].values) == [500, 850] and ds["level"].dtype.kind == "i"
    assert {str(v) for v in ds.data_vars if "bnds" not in str(v)} == {
        "geopotential",
        "temperature",
        "10m_u_component_of_wind",
        "2m_temperature",
    }
    assert all(ds[v].dtype == np.float32 for v in ("geopotential", "2m_temperature"))
    # what WeatherBench2 then does (by_init): rename, valid time from init + lead, select truth
    renamed = ds.rename({"prediction_timedelta": "lead_time", "time": "init_time"})
    valid = renamed.init_time + renamed.lead_time
    np.testing.assert_array_equal(valid.values, ds["valid_time"].values)
    default = xr.open_zarr(written / "default.zarr")
    np.testing.assert_array_equal(
        ds["geopotential"].sel(level=500).values[..., ::-1, :], default["z500"].values
    )
    assert ds.attrs["channels"].split() == CHANNELS


def test_wb2_deterministic_forecast_has_no_realization(tmp_path, store, stepper):
    _run(stepper, store, tmp_path / "one.zarr", layout="wb2", members=1, perturbation="none")
    ds = xr.open_zarr(tmp_path / "one.zarr")
    assert "realization" not in ds.dims
    assert ds["temperature"].dims == (
        "time",
        "prediction_timedelta",
        "level",
        "latitude",
        "longitude",
    )
    back = open_forecast(tmp_path / "one.zarr")
    assert back.sizes["member"] == 1 and np.isfinite(back["t850"].values).all()


def test_cdo_layout_files_have_at_most_four_dims(written):
    files = sorted((written / "cdo").glob("*.nc"))
    assert [f.name for f in files] == [
        f"20200101T{h}_m00{m}.nc" for h in ("00", "06") for m in range(3)
    ]
    for file in files:
        with netCDF4.Dataset(file) as nc:
            assert max(len(v.dimensions) for v in nc.variables.values()) <= 4
            assert nc.dimensions["time"].isunlimited()
            assert nc["z500"].dimensions == ("time", "latitude", "longitude")
            assert nc["time"].standard_name == "time"
            assert nc["forecast_period"].standard_name == "forecast_period"


@pytest.mark.skipif(tool("cdo") is None, reason="CDO is not installed (apt-get install cdo)")
def test_cdo_reads_the_cdo_layout_and_refuses_the_default_one(written):
    file = sorted((written / "cdo").glob("*.nc"))[0]
    done = subprocess.run(
        ["cdo", "-s", "sinfon", str(file)], capture_output=True, text=True, env=SHELL
    )
    assert done.returncode == 0, done.stderr
    assert all(f" {c} " in done.stdout or done.stdout.count(c) for c in CHANNELS)
    assert "pressure_850 : 850 hPa" in done.stdout and "height_2m : 2 m" in done.stdout
    assert "2020-01-01 00:00:00" in done.stdout and "2020-01-01 18:00:00" in done.stdout
    levels = subprocess.run(
        ["cdo", "-s", "showlevel", "-selname,t850", str(file)], capture_output=True, text=True
    )
    assert levels.stdout.split() == ["850"]
    mean = subprocess.run(
        ["cdo", "-s", "output", "-fldmean", "-seltimestep,2", "-selname,t2m", str(file)],
        capture_output=True,
        text=True,
        env=SHELL,
    )
    field = open_forecast(written / "cdo")["t2m"].isel(time=0, member=0, lead_time=1).values
    weights = Grid.equiangular(*field.shape).cell_area_fractions()  # CDO's areas from our bounds
    expected = float((field * weights[:, None]).sum() / (weights.sum() * field.shape[1]))
    assert float(mean.stdout.split()[0]) == pytest.approx(expected, abs=2e-3)
    refused = subprocess.run(
        ["cdo", "-s", "sinfo", str(written / "default.nc")], capture_output=True, text=True
    )
    assert refused.returncode != 0 and "5 dimensional" in refused.stdout + refused.stderr


@pytest.mark.skipif(tool("cdo") is None, reason="CDO is not installed (apt-get install cdo)")
def test_cdo_cannot_decode_zstd_netcdf_from_a_shell(tmp_path, store, stepper):
    out = _run(stepper, store, tmp_path / "zstd", layout="cdo", compression="zstd").out
    file = sorted(out.glob("*.nc"))[0]
    done = subprocess.run(
        ["cdo", "-s", "output", "-selname,t2m", str(file)],
        capture_output=True,
        text=True,
        env=SHELL,
    )
    assert "Filter error: undefined filter encountered" in done.stdout + done.stderr


@pytest.mark.skipif(tool("ncks") is None, reason="NCO is not installed (apt-get install nco)")
def test_nco_reads_the_cdo_layout(written):
    file = sorted((written / "cdo").glob("*.nc"))[0]
    done = subprocess.run(
        ["ncks", "-H", "-v", "t850", str(file)], capture_output=True, text=True, env=SHELL
    )
    assert done.returncode == 0, done.stderr
    assert "pressure_850 = 850" in done.stdout and "t850 =" in done.stdout


def _size(path):
    return sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() else path.stat().st_size


@pytest.mark.parametrize("suffix", [".zarr", ".nc"])
def test_compression_keeps_values_and_shrinks_files(tmp_path, store, stepper, suffix):
    outputs = {
        name: _run(stepper, store, tmp_path / f"{name}{suffix}", compression=name).out
        for name in ("none", "zstd", "deflate", "auto")
    }
    reference = open_forecast(outputs["none"])
    for name, out in outputs.items():
        back = open_forecast(out)
        for channel in CHANNELS:
            np.testing.assert_array_equal(back[channel].values, reference[channel].values)
        if name in ("zstd", "deflate") or (name, suffix) == ("auto", ".zarr"):
            assert _size(out) < _size(outputs["none"]), name
    if suffix == ".nc":
        for name, filter_name in (("zstd", "zstd"), ("deflate", "zlib")):
            with netCDF4.Dataset(outputs[name]) as nc:
                filters = nc["z500"].filters()
                # netCDF4-python sets the shuffle filter together with deflate only
                assert filters[filter_name] and filters["shuffle"] == (filter_name == "zlib"), name
        with netCDF4.Dataset(outputs["auto"]) as nc:  # auto is plain NetCDF
            assert not any(v for k, v in nc["z500"].filters().items() if k != "complevel")
    else:
        import zarr

        for name, cname in (("zstd", "zstd"), ("deflate", "zlib"), ("auto", "zstd")):
            codecs = repr(zarr.open_array(outputs[name] / "z500").metadata.codecs)
            assert f"cname=<BloscCname.{cname}" in codecs, (name, codecs)


def test_layout_and_compression_are_part_of_the_run_identity(tmp_path, store, stepper):
    out = tmp_path / "fc.zarr"
    _run(stepper, store, out)
    with pytest.raises(DataError, match=r"other settings \(layout\)"):
        _run(stepper, store, out, layout="wb2")
    with pytest.raises(DataError, match=r"other settings \(compression\)"):
        _run(stepper, store, out, compression="none")
    assert _run(stepper, store, out).status == "skipped"
    assert _run(stepper, store, out, compression="zstd").status == "skipped"  # what auto means


def test_bad_layout_names_and_paths_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="--layout 'grib' is not one of default, wb2, cdo"):
        writer_for(tmp_path / "fc.zarr", "grib")
    with pytest.raises(ConfigError, match="--compression 'lz4' is not one of auto, zstd, deflate"):
        writer_for(tmp_path / "fc.zarr", "default", "lz4")
    with pytest.raises(ConfigError, match="--layout cdo writes a directory of NetCDF files"):
        writer_for(tmp_path / "fc.zarr", "cdo")


def test_cli_choices_match_the_registries():
    import argparse

    from forecast.cli import run as run_cli
    from forecast.cli.config import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser, run_cli.Config)
    actions = {a.dest: a for a in parser._actions}
    assert tuple(actions["layout"].choices) == tuple(LAYOUTS)
    assert tuple(actions["compression"].choices) == COMPRESSIONS


def _wb2_truth(store) -> xr.Dataset:
    """The store as WeatherBench2's ERA5 datasets look: long names, a level dim, latitude ascending."""
    data = store["data"].drop_vars("channel")
    pieces = [
        data.isel(channel=[CHANNELS.index("z500")])
        .rename(channel="level")
        .assign_coords(level=[500])
        .rename("geopotential"),
        data.isel(channel=[CHANNELS.index("t850")])
        .rename(channel="level")
        .assign_coords(level=[850])
        .rename("temperature"),
        data.isel(channel=CHANNELS.index("t2m")).rename("2m_temperature"),
        data.isel(channel=CHANNELS.index("u10m")).rename("10m_u_component_of_wind"),
    ]
    truth = xr.merge(pieces, join="outer", compat="no_conflicts")
    return truth.isel(latitude=slice(None, None, -1))


def test_wb2_layout_scores_the_same_with_scores_package(written, store, store_path):
    """The wb2 file, evaluated as WeatherBench2 does (by init), with `scores`: same as forecast score."""
    import scores.continuous
    import scores.probability

    from forecast.scoring.score import score_files

    ours, _, _ = score_files(written / "wb2.zarr", store_path, spectra=False)
    forecast = xr.open_zarr(written / "wb2.zarr").rename(
        {"prediction_timedelta": "lead_time", "time": "init_time"}
    )
    forecast = forecast.assign_coords(valid_time=forecast.init_time + forecast.lead_time)
    truth = _wb2_truth(store).sel(time=forecast.valid_time)
    # WeatherBench2's latitude weights: cell areas between mid-latitudes and the poles, mean 1
    lat = np.deg2rad(forecast["latitude"].values)
    edges = np.concatenate([[-np.pi / 2], (lat[:-1] + lat[1:]) / 2, [np.pi / 2]])
    area = np.diff(np.sin(edges))
    weights = xr.DataArray(
        area / area.mean(), dims="latitude", coords={"latitude": forecast.latitude}
    )
    weights = weights.broadcast_like(forecast["longitude"])
    space = ["latitude", "longitude"]
    for channel, name, level in (("z500", "geopotential", 500), ("t2m", "2m_temperature", None)):
        f, t = forecast[name], truth[name]
        if level is not None:
            f, t = f.sel(level=level), t.sel(level=level)
        f, t = f.load().astype(np.float64), t.load().astype(np.float64)
        mse = scores.continuous.mse(f.mean("realization"), t, reduce_dims=space, weights=weights)
        rmse = np.sqrt(mse.mean("init_time")).values
        crps = (
            scores.probability.crps_for_ensemble(
                f,
                t,
                ensemble_member_dim="realization",
                method="fair",
                reduce_dims=space,
                weights=weights,
            )
            .mean("init_time")
            .values
        )
        expected = ours.sel(model="forecast", channel=channel, region="global")
        np.testing.assert_allclose(rmse, expected["rmse"].values, rtol=1e-9)
        np.testing.assert_allclose(crps, expected["crps"].values, rtol=1e-6)
