"""The Python of docs/analysis.md runs on a real forecast and scores file and does what it says."""

from __future__ import annotations

import re
from pathlib import Path

# cartopy before any NetCDF I/O in this process (see tests/integration/test_docs_commands.py)
import cartopy.crs  # noqa: F401
import matplotlib
import matplotlib.figure
import numpy as np
import pytest

from forecast.scoring.plots import coastlines_available
from forecast.scoring.score import score_files
from forecast.store import open_store
from inference.initial import parse_init_spec
from tests.inference.conftest import make_stepper, write_store
from tests.inference.conftest import run as run_forecast

DOC = Path(__file__).resolve().parents[2] / "docs" / "analysis.md"


def blocks(section: str | None) -> list[str]:
    """The ```python blocks of one section of analysis.md (None: before the first heading ##)."""
    text = DOC.read_text()
    parts = re.split(r"^## ", text, flags=re.M)
    chosen = parts[0] if section is None else next(p for p in parts if p.startswith(section))
    return re.findall(r"```python\n(.*?)```", chosen, flags=re.S)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    store_path = write_store(root / "store.zarr")
    forecast = root / "forecast_sfno.zarr"
    run_forecast(
        make_stepper(), open_store(store_path), parse_init_spec("2020-01-01T00/2020-01-01T06/6h", "standard"),
        4, forecast, members=3, perturbation="gaussian",
    )  # fmt: skip
    score_files(forecast, store_path, out=root / "scores_sfno.nc", spectra=False)
    return root


def run(code: str, root: Path, monkeypatch) -> dict:
    code = code.replace("work/demo/", f"{root}/")
    saved = {}
    original = matplotlib.figure.Figure.savefig

    def savefig(figure, name, *args, **kwargs):
        saved[Path(name).name] = [
            (type(ax).__name__, len(ax.get_lines()))
            for ax in figure.axes
            if ax.get_label() != "<colorbar>"
        ]
        return original(figure, name, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    monkeypatch.chdir(root)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    namespace["_saved"] = saved
    return namespace


def test_the_first_example_draws_the_map_and_the_rmse_apart(demo, monkeypatch):
    if not coastlines_available("110m"):  # the example calls ax.coastlines() itself
        pytest.skip("cartopy has no Natural Earth coastlines here and cannot download them")
    namespace = run(blocks(None)[0], demo, monkeypatch)
    saved = namespace["_saved"]
    assert set(saved) == {"z500_mean_24h.png", "z500_rmse.png"}
    assert saved["z500_mean_24h.png"] == [("GeoAxes", 0)]  # the map holds no curves
    assert saved["z500_rmse.png"] == [("Axes", 3)]  # forecast, persistence, climatology
    assert namespace["rmse"].attrs["units"] == "m**2 s**-2"
    assert (demo / "z500_rmse.png").stat().st_size > 5_000


def test_valid_time_and_latitude_recipes(demo, monkeypatch):
    setup = "import xarray as xr\nforecast = xr.open_zarr('work/demo/forecast_sfno.zarr')\n"
    namespace = run(setup + blocks("Selecting by valid time")[0], demo, monkeypatch)
    fields = namespace["fields"]
    # 2020-01-02T00 is lead 24 h from 00 and lead 18 h from 06
    assert dict(fields.sizes)["time"] == 2 and np.isfinite(fields.values).sum() == 2 * 3 * 16 * 32
    assert namespace["one"].sel(valid_time=namespace["when"]).shape == (3, 16, 32)
    namespace = run(setup + blocks("Latitude descends")[0], demo, monkeypatch)
    assert namespace["tropics"].sizes["latitude"] > 0
    assert namespace["forecast"]["t2m"].sel(latitude=slice(-20, 20)).sizes["latitude"] == 0
