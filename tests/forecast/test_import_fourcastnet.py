"""Imported FourCastNet v1 and v2-small against the publishers' own networks, and the chain ingest -> run -> score.

The reference networks come from the PyPI packages ai-models-fourcastnet and
ai-models-fourcastnetv2 (see ``fourcastnet_reference``), built at small sizes
with random weights, saved in the published layout and imported with
``forecast import``. Our outputs must match the reference to 1e-5 relative,
fp32 on the CPU, for one model step and for each lead of a 4-step ``forecast
run`` from a store that ``forecast ingest`` made of one day of ERA5-style
NetCDF (the initial times only: no training period). "Relative" is the L2 norm
of the difference over the whole state, in the publisher's normalised units
(each channel divided by its ``global_stds`` entry), over the norm of the
reference: the model's own state space, where every channel weighs alike.
One step is also held to 1e-5 per channel in physical units.

Why not per channel after four steps: the random networks are chaotic. Fed its
own input perturbed by fp32 rounding (6e-8), the reference itself drifts by up
to 7e-6 in single channels after four steps (twice per step), so per-channel
1e-5 would test the rounding, not the implementation. The reference rollout is
the publisher's loop (ai-models): normalise once, step in normalised units,
denormalise each output.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from forecast.checkpoint import load_checkpoint, read_metadata
from forecast.cli.main import main
from forecast.importers.fourcastnet import CHANNELS_20, CHANNELS_26
from forecast.importers.fourcastnet_v2 import CHANNELS as CHANNELS_73
from forecast.importers.fourcastnet_v2 import LEVELS
from forecast.scoring.scores_file import open_scores
from tests.forecast import fourcastnet_reference as reference

NLAT, NLON = 17, 32  # equiangular with poles; v1 sees the 16 northern rows
TIMES = pd.date_range("2020-01-01", periods=4, freq="6h").values
TOLERANCE = 1e-5
V2_SIZE = {"embed_dim": 16, "num_layers": 3, "scale_factor": 2, "spectral_layers": 3}
V1_SIZE = {"patch_size": (4, 4), "embed_dim": 32, "depth": 2, "num_blocks": 4}


def _era5_like_source(path) -> None:
    """One day of CDS-style NetCDF (new layout) with the 73 channels of FourCastNet v2, smooth plus noise."""
    rng = np.random.default_rng(0)
    lat = np.linspace(90.0, -90.0, NLAT)
    lon = np.arange(NLON) * 360.0 / NLON
    la, lo = np.deg2rad(lat)[None, :, None], np.deg2rad(lon)[None, None, :]
    phase = np.arange(len(TIMES))[:, None, None] * 0.4

    def field(mean, amplitude, levels=None):
        shape = (len(TIMES), NLAT, NLON)
        pattern = (
            np.sin(la)
            + 0.5 * np.cos(la) ** 2 * np.cos(2 * lo + phase)
            + 0.3 * np.cos(la) * np.sin(lo - phase)
        )
        values = mean + amplitude * (pattern + 0.2 * rng.standard_normal(shape))
        return values.astype(np.float32)

    height = 7000.0 * np.log(
        1013.25 / np.asarray(LEVELS, dtype=float)
    )  # z1000 about 900 m**2 s**-2
    level_fields = {
        # spreads as in ERA5 (std/mean of z50 about 1/60): the rounding of fp32 states stays realistic
        "z": np.stack([field(9.80665 * h, 300.0 + 0.15 * h) for h in height], axis=1),
        "t": np.stack([field(288.0 - 6.5e-3 * min(h, 11000.0), 10.0) for h in height], axis=1),
        "u": np.stack([field(10.0, 15.0) for _ in LEVELS], axis=1),
        "v": np.stack([field(0.0, 8.0) for _ in LEVELS], axis=1),
        "r": np.stack([field(60.0, 25.0) for _ in LEVELS], axis=1),
    }
    units = {"z": "m**2 s**-2", "t": "K", "u": "m s**-1", "v": "m s**-1", "r": "%"}
    single = {
        "u10": (field(3.0, 6.0), "m s**-1"),
        "v10": (field(0.0, 5.0), "m s**-1"),
        "u100": (field(4.0, 8.0), "m s**-1"),
        "v100": (field(0.0, 7.0), "m s**-1"),
        "t2m": (field(280.0, 15.0), "K"),
        "sp": (field(98000.0, 3000.0), "Pa"),
        "msl": (field(101325.0, 1500.0), "Pa"),
        "tcwv": (field(20.0, 10.0), "kg m**-2"),
    }
    data_vars = {
        name: (
            ("valid_time", "pressure_level", "latitude", "longitude"),
            values,
            {"units": units[name]},
        )
        for name, values in level_fields.items()
    }
    data_vars |= {
        name: (("valid_time", "latitude", "longitude"), v, {"units": u})
        for name, (v, u) in single.items()
    }
    xr.Dataset(
        data_vars,
        coords={
            "valid_time": TIMES,
            "pressure_level": ("pressure_level", np.asarray(LEVELS, dtype=float), {"units": "hPa"}),
            "latitude": ("latitude", lat, {"units": "degrees_north"}),
            "longitude": ("longitude", lon, {"units": "degrees_east"}),
        },
    ).to_netcdf(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store of one day (4 times) at 17x32 made by ``forecast ingest``."""
    folder = tmp_path_factory.mktemp("fourcastnet")
    _era5_like_source(folder / "era5_20200101.nc")
    out = folder / "era5.zarr"
    assert (
        main(["ingest", str(folder / "era5_20200101.nc"), "--out", str(out), "--no-progress"]) == 0
    )
    return out


def _statistics(store_path, channels, folder, extra: int = 0):
    """The publisher-style .npy statistics of ``channels`` (from the store), plus ``extra`` unused channels."""
    ds = xr.open_zarr(store_path)
    mean = ds["mean"].sel(channel=list(channels)).values
    std = ds["std"].sel(channel=list(channels)).values
    mean = np.concatenate([mean, np.full(extra, 7.0)])
    std = np.concatenate([std, np.full(extra, 3.0)])
    return reference.save_statistics(mean, std, folder)


def relative_errors(ours: np.ndarray, ref: np.ndarray, channel_axis: int) -> np.ndarray:
    """Per channel, ``||ours - ref||_2 / ||ref||_2`` over the other axes (float64)."""
    ours = np.moveaxis(np.asarray(ours, np.float64), channel_axis, 0)
    ref = np.moveaxis(np.asarray(ref, np.float64), channel_axis, 0)
    ours, ref = ours.reshape(len(ref), -1), ref.reshape(len(ref), -1)
    return np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)


def state_error(ours: np.ndarray, ref: np.ndarray, mean, std, channel_axis: int) -> float:
    """``||ours - ref|| / ||ref||`` of the whole state in normalised units (float64)."""
    shape = [-1 if axis == channel_axis else 1 for axis in range(ref.ndim)]
    mean = np.asarray(mean, np.float64).reshape(shape)
    std = np.asarray(std, np.float64).reshape(shape)
    ours_n = (np.asarray(ours, np.float64) - mean) / std
    ref_n = (np.asarray(ref, np.float64) - mean) / std
    return float(np.linalg.norm(ours_n - ref_n) / np.linalg.norm(ref_n))


def assert_close_per_channel(ours: np.ndarray, ref: np.ndarray, channel_axis: int) -> None:
    """Every channel within :data:`TOLERANCE` relative (L2 over the grid, physical units)."""
    errors = relative_errors(ours, ref, channel_axis)
    worst = int(np.argmax(errors))
    assert errors[worst] <= TOLERANCE, f"channel {worst}: relative error {errors[worst]:.3g}"


def assert_state_close(ours, ref, mean, std, channel_axis: int) -> None:
    """The whole state within :data:`TOLERANCE` relative, in normalised units."""
    error = state_error(ours, ref, mean, std, channel_axis)
    assert error <= TOLERANCE, f"relative error of the state {error:.3g}"


def _initial_state(store_path, channels, time_index: int = 0) -> np.ndarray:
    ds = xr.open_zarr(store_path)
    return (
        ds["data"].sel(channel=list(channels)).isel(time=time_index).values[None].astype(np.float32)
    )


def _reference_rollout(network, state, mean, std, steps, rows=None) -> list[np.ndarray]:
    """The publisher's loop: normalise with the .npy statistics, step the network, denormalise each output."""
    mean = mean.reshape(1, -1, 1, 1).astype(np.float32)
    std = std.reshape(1, -1, 1, 1).astype(np.float32)
    x = torch.from_numpy((state[..., :rows, :] - mean) / std)
    outputs = []
    with torch.no_grad():
        for _ in range(steps):
            x = network(x)
            outputs.append(x.numpy() * std + mean)
    return outputs


def _import(tmp_path, model, weights, means, stds, *flags):
    out = tmp_path / f"{model}.ckpt"
    argv = ["import", model, "--weights", str(weights), "--means", str(means), "--stds", str(stds)]
    assert main([*argv, "--out", str(out), "--no-progress", *flags]) == 0
    return out


def _run(checkpoint, store_path, out, *flags):
    argv = ["run", "--checkpoint", str(checkpoint), "--data", str(store_path), "--out", str(out)]
    assert main([*argv, "--device", "cpu", "--no-progress", *flags]) == 0
    return xr.open_zarr(out)


def _v2_reference(seed: int = 1):
    network = reference.sfnonet().FourierNeuralOperatorNet(
        img_size=(NLAT, NLON),
        in_chans=len(CHANNELS_73),
        out_chans=len(CHANNELS_73),
        **V2_SIZE,
    )
    return reference.randomize(network, seed)


def _v1_reference(channels: int, seed: int = 2):
    network = reference.afnonet().AFNONet(
        img_size=(NLAT - 1, NLON), in_chans=channels, out_chans=channels, **V1_SIZE
    )
    return reference.randomize(network, seed)


def test_v2_small_one_step_and_four_step_run_match_the_reference(store, tmp_path):
    store_path = store
    network = _v2_reference()
    weights = reference.save_published(network, tmp_path / "weights.tar")
    means, stds = _statistics(store_path, CHANNELS_73, tmp_path)
    checkpoint = _import(
        tmp_path, "fourcastnet-v2-small", weights, means, stds, "--scale-factor", "2"
    )
    metadata = read_metadata(checkpoint)
    assert metadata["model"] == "sfno-nonlinear" and metadata["channels"] == list(CHANNELS_73)
    assert metadata["step"] == "6h" and metadata["grid"] == {
        "kind": "equiangular",
        "nlat": NLAT,
        "nlon": NLON,
    }
    assert (metadata["forcings"], metadata["residual"], metadata["history"]) == (False, False, 1)
    assert metadata["provenance"]["read_from_weights"]["embed_dim"] == 16
    assert metadata["provenance"]["not_in_weights"]["scale_factor"] == 2
    mean, std = np.load(means).ravel(), np.load(stds).ravel()
    assert metadata["normalizer"]["mean"] == pytest.approx(mean.astype(np.float64).tolist())

    state = _initial_state(store_path, CHANNELS_73)
    expected = _reference_rollout(network, state, mean, std, steps=4)
    stepper, _ = load_checkpoint(checkpoint)
    one_step = stepper.advance(torch.from_numpy(state), TIMES[:1]).numpy()
    assert_close_per_channel(one_step, expected[0], channel_axis=1)
    assert_state_close(one_step, expected[0], mean, std, channel_axis=1)

    forecast = _run(
        checkpoint, store_path, tmp_path / "fc.zarr", "--init", "2020-01-01T00", "--steps", "4"
    )
    np.testing.assert_array_equal(
        forecast["z500"].isel(time=0, member=0, lead_time=0).values,
        state[0, CHANNELS_73.index("z500")],
    )
    for lead in range(1, 5):
        ours = np.stack(
            [forecast[c].isel(time=0, member=0, lead_time=lead).values for c in CHANNELS_73]
        )
        assert_state_close(ours, expected[lead - 1][0], mean, std, channel_axis=0)

    scores = tmp_path / "scores.nc"
    assert (
        main(["score", str(tmp_path / "fc.zarr"), "--truth", str(store_path), "--out", str(scores)])
        == 0
    )
    result = open_scores(scores)
    rmse = result["rmse"].sel(model=result["model"].values[0])
    if "region" in rmse.dims:
        rmse = rmse.sel(region="global")
    assert float(np.abs(rmse.isel(lead_time=0)).max()) == 0.0  # lead 0 is the analysis itself
    assert np.isfinite(rmse.isel(lead_time=slice(1, 4))).all()  # 6 h .. 18 h verify within the day
    assert (rmse.isel(lead_time=slice(1, 4)) > 0).all()


def test_v2_small_ensemble_from_latest(store, tmp_path):
    store_path = store
    weights = reference.save_published(_v2_reference(seed=3), tmp_path / "weights.tar")
    means, stds = _statistics(store_path, CHANNELS_73, tmp_path)
    checkpoint = _import(
        tmp_path, "fourcastnet-v2-small", weights, means, stds, "--scale-factor", "2"
    )
    forecast = _run(
        checkpoint,
        store_path,
        tmp_path / "ens.zarr",
        "--init",
        "latest",
        "--steps",
        "2",
        "--members",
        "3",
        "--perturbation",
        "grf",
        "--seed",
        "1",
    )
    assert forecast.sizes["member"] == 3 and forecast.sizes["lead_time"] == 3
    assert str(forecast["time"].values[0])[:13] == "2020-01-01T18"
    z500 = forecast["z500"].isel(time=0, lead_time=2).values
    assert np.isfinite(z500).all() and np.abs(z500[0] - z500[1]).max() > 0


@pytest.mark.parametrize(
    ("channels", "release", "extra"), [(CHANNELS_20, "0.0", 1), (CHANNELS_26, "0.1", 0)]
)
def test_v1_one_step_and_four_step_run_match_the_reference(
    store, tmp_path, channels, release, extra
):
    store_path = store
    network = _v1_reference(len(channels))
    weights = reference.save_published(network, tmp_path / "backbone.ckpt", iters=10, epoch=1)
    means, stds = _statistics(store_path, channels, tmp_path, extra=extra)
    checkpoint = _import(tmp_path, "fourcastnet", weights, means, stds, "--grid", f"{NLAT}x{NLON}")
    metadata = read_metadata(checkpoint)
    assert metadata["channels"] == list(channels)  # told apart by the weights' shapes
    assert metadata["provenance"]["release"] == release
    assert metadata["provenance"]["statistics_channels_ignored"] == extra
    assert (
        metadata["drop_south_pole"] is True
        and metadata["hparams"]["mode_truncation"] == "fourcastnet"
    )
    mean, std = np.load(means).ravel()[: len(channels)], np.load(stds).ravel()[: len(channels)]

    state = _initial_state(store_path, channels)
    expected = _reference_rollout(network, state, mean, std, steps=4, rows=NLAT - 1)
    stepper, _ = load_checkpoint(checkpoint)
    one_step = stepper.advance(torch.from_numpy(state), TIMES[:1]).numpy()
    assert one_step.shape == (1, len(channels), NLAT, NLON)
    assert_close_per_channel(one_step[..., :-1, :], expected[0], channel_axis=1)
    assert_state_close(one_step[..., :-1, :], expected[0], mean, std, channel_axis=1)
    np.testing.assert_array_equal(
        one_step[..., -1, :], one_step[..., -2, :]
    )  # pole row: its neighbour

    forecast = _run(
        checkpoint, store_path, tmp_path / "fc.zarr", "--init", "2020-01-01T00", "--steps", "4"
    )
    for lead in range(1, 5):
        ours = np.stack(
            [forecast[c].isel(time=0, member=0, lead_time=lead).values for c in channels]
        )
        assert_state_close(ours[:, :-1], expected[lead - 1][0], mean, std, channel_axis=0)
        assert_close_per_channel(ours[:, :-1], expected[lead - 1][0], channel_axis=0)  # v1 is tame
