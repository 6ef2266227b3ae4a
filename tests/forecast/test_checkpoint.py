"""Checkpoints: bit-for-bit round trip in a fresh process, safe loading, clear errors."""

from __future__ import annotations

import datetime as dt
import hashlib
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from forecast.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    check_compatible,
    checkpoint_digest,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from forecast.errors import CheckpointError
from forecast.grid import Grid
from forecast.normalize import Normalizer
from forecast.steppers import BackboneStepper

CHANNELS = ["z500", "t850", "u10m"]
GRID = Grid.legendre_gauss(8, 16)
NORMALIZER = Normalizer(
    tuple(CHANNELS),
    np.array([5.4e4, 270.0, 0.5]),
    np.array([3e3, 12.0, 5.0]),
    np.array([250.0, 1.5, 2.0]),
)
TIMES = np.array(["2020-02-29T18", "2020-07-01T06"], dtype="datetime64[ns]")


def make_stepper(model: str = "sfno", hparams: dict | None = None) -> BackboneStepper:
    torch.manual_seed(0)
    hparams = hparams or {
        "embed_dim": 8,
        "num_layers": 2,
        "pos_embed": "spherical_harmonics",
        "pos_embed_degree": 2,
    }
    return BackboneStepper(
        model, hparams, CHANNELS, GRID, dt.timedelta(hours=6), NORMALIZER, history=2
    )


def state() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    mean = torch.tensor([5.4e4, 270.0, 0.5]).reshape(1, 1, 3, 1, 1)
    return mean + torch.randn(2, 2, 3, *GRID.shape, generator=generator) * torch.tensor(
        [3e3, 12.0, 5.0]
    ).reshape(1, 1, 3, 1, 1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[pathlib.Path, BackboneStepper]:
    stepper = make_stepper()
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    save_checkpoint(path, stepper, provenance={"store": "demo.zarr", "steps": 10, "loss": 0.25})
    return path, stepper


def test_metadata_and_atomic_write(saved):
    path, _ = saved
    assert [p.name for p in path.parent.iterdir()] == ["model.ckpt"]  # no temporary left behind
    metadata = read_metadata(path)
    assert metadata["format_version"] == CHECKPOINT_FORMAT_VERSION == 2
    assert metadata["stepper"] == "backbone"
    assert metadata["model"] == "sfno" and metadata["hparams"]["embed_dim"] == 8
    assert metadata["channels"] == CHANNELS
    assert metadata["grid"] == {"kind": "legendre-gauss", "nlat": 8, "nlon": 16}
    assert (
        metadata["step"] == "6h" and metadata["step_seconds"] == 21600 and metadata["history"] == 2
    )
    assert metadata["normalizer"]["diff_std"] == [250.0, 1.5, 2.0]
    assert metadata["provenance"] == {"store": "demo.zarr", "steps": 10, "loss": 0.25}
    assert checkpoint_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def one_thread():
    """As in the fresh process (OMP_NUM_THREADS=1): the same reduction order, the same bits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_round_trip_in_fresh_process_is_bit_for_bit(saved, tmp_path, one_thread):
    path, stepper = saved
    inputs = tmp_path / "inputs.pt"
    torch.save({"state": state()}, inputs)
    expected = stepper.eval().advance(state(), TIMES)
    script = textwrap.dedent(
        f"""
        import numpy as np, torch
        from forecast.checkpoint import load_checkpoint
        torch.set_num_threads({torch.get_num_threads()})
        stepper, metadata = load_checkpoint({str(path)!r})
        x = torch.load({str(inputs)!r}, weights_only=True)["state"]
        times = np.array({[str(t) for t in TIMES]!r}, dtype="datetime64[ns]")
        torch.save({{"out": stepper.advance(x, times)}}, {str(tmp_path / "out.pt")!r})
        """
    )
    # the same thread count as this process: a float sum's order depends on it
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        cwd=pathlib.Path(__file__).parents[2],
    )
    out = torch.load(tmp_path / "out.pt", weights_only=True)["out"]
    assert torch.equal(out, expected)
    loaded, _ = load_checkpoint(path)
    assert torch.equal(loaded.advance(state(), TIMES), expected)
    assert not loaded.training


@pytest.mark.parametrize("model", ["afno", "fno"])
def test_round_trip_other_backbones(tmp_path, model):
    hparams = {
        "afno": {"embed_dim": 8, "depth": 1, "num_blocks": 2, "patch_size": [2, 4]},
        "fno": {"embed_dim": 4, "num_layers": 1},
    }[model]
    stepper = make_stepper(model, hparams).eval()
    save_checkpoint(tmp_path / "m.ckpt", stepper)
    loaded, metadata = load_checkpoint(tmp_path / "m.ckpt")
    assert metadata["hparams"] == stepper.hparams
    assert torch.equal(loaded.advance(state(), TIMES), stepper.advance(state(), TIMES))


def test_regional_grid_round_trip(tmp_path):
    regional = Grid("regional", 55.0 - np.arange(10) * 0.5, 5.0 + np.arange(12) * 0.5)
    stepper = BackboneStepper(
        "fno",
        {"embed_dim": 4, "num_layers": 1},
        CHANNELS,
        regional,
        dt.timedelta(hours=1),
        NORMALIZER,
    )
    save_checkpoint(tmp_path / "r.ckpt", stepper)
    loaded, metadata = load_checkpoint(tmp_path / "r.ckpt")
    assert loaded.grid == regional and metadata["step"] == "1h"


def test_truncated_file(saved, tmp_path):
    path, _ = saved
    broken = tmp_path / "broken.ckpt"
    data = path.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError,
        match=r"broken\.ckpt: cannot read the checkpoint, the file is truncated or corrupt",
    ) as info:
        load_checkpoint(broken)
    assert "\n" not in str(info.value) and "copy it again" in str(info.value)


def test_errors_keep_their_cause_for_debug(saved, tmp_path, capsys):
    """A corrupt file's error names the file in one line, and --debug shows the reader's own error."""
    from forecast.cli.main import main

    path, _ = saved
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(broken)
    assert info.value.__cause__ is not None
    argv = ["run", "--checkpoint", str(broken), "--data", str(tmp_path), "--init", "2020-01-01",
            "--steps", "1", "--out", str(tmp_path / "fc.zarr")]  # fmt: skip
    store = tmp_path / "store.zarr"  # the store is opened first: give it one
    from tests.inference.conftest import write_store

    write_store(store)
    argv[4] = str(store)
    assert main(argv) == 1
    assert "\n" not in capsys.readouterr().err.strip()
    assert main([*argv, "--debug"]) == 1
    err = capsys.readouterr().err
    assert "The above exception was the direct cause of the following exception" in err
    assert type(info.value.__cause__).__name__ in err


def test_unknown_format_version(tmp_path):
    path = tmp_path / "future.ckpt"
    torch.save(
        {"format": "forecast-checkpoint", "format_version": 99, "metadata": {}, "state_dict": {}},
        path,
    )
    with pytest.raises(
        CheckpointError,
        match=r"future\.ckpt: checkpoint format version 99 is not supported .*upgrade",
    ):
        load_checkpoint(path)


class _Exploit:
    """Pickles to a call that creates a file: what an unsafe loader would execute."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_that_would_execute_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save(
        {
            "format": "forecast-checkpoint",
            "format_version": 1,
            "metadata": _Exploit(marker),
            "state_dict": {},
        },
        path,
    )
    with pytest.raises(
        CheckpointError, match=r"evil\.ckpt: refusing to load: the file contains pickled objects"
    ):
        load_checkpoint(path)
    assert not marker.exists()


def test_other_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a forecast checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="provenance is not JSON-able"):
        save_checkpoint(
            tmp_path / "x.ckpt",
            make_stepper("fno", {"embed_dim": 2, "num_layers": 1}),
            provenance={"when": dt.datetime(2020, 1, 1)},
        )


def test_weights_that_do_not_fit(saved, tmp_path):
    path, _ = saved
    payload = torch.load(path, weights_only=True)
    payload["metadata"]["hparams"]["embed_dim"] = 16
    torch.save(payload, tmp_path / "edited.ckpt")
    with pytest.raises(CheckpointError, match="weights do not fit the model"):
        load_checkpoint(tmp_path / "edited.ckpt")


def test_check_compatible(saved):
    metadata = read_metadata(saved[0])
    check_compatible(
        metadata, ["u10m", "t850", "z500", "msl"], GRID, dt.timedelta(hours=6)
    )  # extra channels are fine
    with pytest.raises(CheckpointError) as info:
        check_compatible(metadata, ["z500"], Grid.equiangular(8, 16), dt.timedelta(hours=3))
    message = str(info.value)
    assert "data lacks channel(s) t850, u10m" in message
    assert "model grid is legendre-gauss 8x16, data grid is equiangular 8x16" in message
    assert "model step is 6h, data step is 3h" in message
    with pytest.raises(CheckpointError, match="data grid is legendre-gauss 16x32"):
        check_compatible(
            metadata,
            CHANNELS,
            {"kind": "legendre-gauss", "nlat": 16, "nlon": 32},
            dt.timedelta(hours=6),
        )


def test_diurnal_baseline_round_trip_and_missing_table(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    hours = [0.0, 6.0, 12.0, 18.0]
    table = rng.normal(size=(4, 3, *GRID.shape)) * np.array([50.0, 2.0, 0.5])[None, :, None, None]
    stepper = BackboneStepper(
        "fno", {"embed_dim": 4, "num_layers": 1}, CHANNELS, GRID, dt.timedelta(hours=6),
        NORMALIZER, history=2, diurnal=(hours, table),
    )  # fmt: skip
    path = tmp_path / "diurnal.ckpt"
    save_checkpoint(path, stepper)
    loaded, metadata = load_checkpoint(path)
    assert metadata["diurnal_hours"] == hours
    torch.testing.assert_close(loaded.diurnal.table, stepper.diurnal.table, rtol=0, atol=0)
    torch.testing.assert_close(
        loaded.advance(state(), TIMES), stepper.eval().advance(state(), TIMES)
    )
    payload = torch.load(path, weights_only=True)
    assert set(payload["state_dict"]) == set(stepper.state_dict())  # saved as it is
    del payload["state_dict"]["diurnal.table"]
    torch.save(payload, tmp_path / "no_table.ckpt")
    with pytest.raises(CheckpointError, match=r"weights do not fit .*diurnal\.table"):
        load_checkpoint(tmp_path / "no_table.ckpt")


def test_version_1_checkpoints_still_load(tmp_path):
    """Version 1 kept the backbone's weights without their prefix and the diurnal table beside them."""
    torch.manual_seed(0)
    hours = [0.0, 12.0]
    table = np.random.default_rng(1).normal(size=(2, 3, *GRID.shape))
    stepper = BackboneStepper(
        "fno", {"embed_dim": 4, "num_layers": 1}, CHANNELS, GRID, dt.timedelta(hours=6),
        NORMALIZER, history=2, diurnal=(hours, table),
    ).eval()  # fmt: skip
    metadata = {k: v for k, v in stepper.config().items() if k != "stepper"}
    payload = {
        "format": "forecast-checkpoint",
        "format_version": 1,
        "metadata": {**metadata, "step": "6h", "provenance": {}, "format_version": 1},
        "state_dict": stepper.model.state_dict(),
        "diurnal_table": stepper.diurnal.table,
    }
    torch.save(payload, tmp_path / "v1.ckpt")
    loaded, _ = load_checkpoint(tmp_path / "v1.ckpt")
    assert torch.equal(loaded.advance(state(), TIMES), stepper.advance(state(), TIMES))


def _flip_middle(
    path: pathlib.Path, out: pathlib.Path, record: str | None = None, count: int = 64
) -> str:
    """Write ``path`` to ``out`` with ``count`` bytes inverted in the middle of a record's data.

    The record is the largest tensor unless named; returns its name in the archive.
    """
    import struct
    import zipfile

    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    info = (
        max((i for i in infos if "/data/" in i.filename), key=lambda i: i.compress_size)
        if record is None
        else next(i for i in infos if i.filename.endswith(record))
    )
    assert info.compress_type == zipfile.ZIP_STORED
    name_length, extra_length = struct.unpack(
        "<HH", data[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_length + extra_length
    middle = start + info.compress_size // 2 - count // 2
    assert info.compress_size >= count
    for k in range(middle, middle + count):
        data[k] ^= 0xFF
    out.write_bytes(bytes(data))
    return info.filename.split("/", 1)[1]


@pytest.mark.parametrize("record", [None, "data.pkl"])
def test_flipped_bytes_fail_to_load_naming_the_file_and_record(saved, tmp_path, record):
    path, _ = saved
    flipped = tmp_path / "flipped.ckpt"
    name = _flip_middle(path, flipped, record)
    assert checkpoint_digest(flipped) != checkpoint_digest(path)
    for load in (load_checkpoint, read_metadata):
        with pytest.raises(CheckpointError) as info:
            load(flipped)
        assert str(info.value) == (
            f"{flipped}: the checkpoint is corrupt: its record {name} fails the CRC-32 check "
            "(its bytes changed after it was saved); copy it again from the original or re-save it; "
            "do not use this file"
        )
    load_checkpoint(path)  # the original still loads


def test_flipped_checkpoint_is_one_line_on_the_command_line(saved, tmp_path, capsys):
    from forecast.cli.main import main
    from tests.inference.conftest import write_store

    path, _ = saved
    flipped = tmp_path / "flipped.ckpt"
    name = _flip_middle(path, flipped)
    write_store(tmp_path / "s.zarr", periods=3)
    code = main(
        [
            "run",
            "--checkpoint",
            str(flipped),
            "--data",
            str(tmp_path / "s.zarr"),
            "--init",
            "latest",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "fc.zarr"),
            "--device",
            "cpu",
        ]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(
        f"forecast run: error: {flipped}: the checkpoint is corrupt: its record {name} fails"
    )
