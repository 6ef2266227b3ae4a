"""forecast.staging: stages, downloads and the publish order, on a moto S3 server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forecast import staging, storage
from tests.object_storage import s3, s3_server  # noqa: F401


@pytest.fixture(autouse=True)
def _staging_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORECAST_STAGING", str(tmp_path / "staging"))


def test_a_stage_is_the_same_for_the_same_url_and_keeps_the_name() -> None:
    a = staging.stage("s3://bucket/runs/fc.zarr")
    assert a == staging.stage("s3://bucket/runs/fc.zarr/") and a.name == "fc.zarr"
    assert a.parent == staging.stage("s3://bucket/runs/other.nc").parent
    assert a.parent != staging.stage("s3://bucket/elsewhere/fc.zarr").parent
    assert (
        staging.remote_for("s3://bucket/runs/{init}.zarr", a.parent / "2020010100.zarr")
        == "s3://bucket/runs/2020010100.zarr"
    )


def test_upload_order_puts_data_first_and_the_root_metadata_last(tmp_path: Path) -> None:
    root = tmp_path / "fc.zarr"
    for name in (
        "zarr.json",
        "t2m/zarr.json",
        "t2m/c/0/0",
        "t2m/c/1/0",
        "time/zarr.json",
        "time/c/0",
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    order = [p.relative_to(root).as_posix() for p in staging._upload_order(root)]
    assert order[:3] == ["t2m/c/0/0", "t2m/c/1/0", "time/c/0"]
    assert sorted(order[3:5]) == ["t2m/zarr.json", "time/zarr.json"] and order[-1] == "zarr.json"


def test_local_copy_downloads_once_and_again_when_the_object_changes(s3: str) -> None:  # noqa: F811
    url = f"{s3}/runs/best.ckpt"
    storage.write_bytes(url, b"first")
    first = staging.local_copy(url)
    assert first.read_bytes() == b"first" and staging.local_copy(url) == first
    storage.write_bytes(url, b"second version")
    second = staging.local_copy(url)
    assert second != first and second.read_bytes() == b"second version"
    with pytest.raises(storage.StorageError, match="not found"):
        staging.local_copy(f"{s3}/runs/missing.ckpt")


def test_output_path_uploads_a_file_only_when_the_block_succeeds(s3: str) -> None:  # noqa: F811
    url = f"{s3}/scores/scores.nc"
    with pytest.raises(RuntimeError), staging.output_path(url) as local:
        local.write_bytes(b"half")
        raise RuntimeError("the writer failed")
    assert not storage.exists(url)
    with staging.output_path(url) as local:
        local.write_bytes(b"whole")
    assert storage.read_bytes(url) == b"whole" and not local.exists()


def test_a_forecast_publish_replaces_only_its_own_folder_and_writes_the_marker_first(
    s3: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    url = f"{s3}/fc.zarr"
    storage.write_bytes(f"{url}/old/c/0", b"old chunk")
    storage.write_bytes(f"{url}/zarr.json", b"{}")
    storage.write_bytes(f"{s3}/fc.zarr.plots/keep.png", b"someone's")
    stage = tmp_path / "fc.zarr"
    (stage / "new").mkdir(parents=True)
    (stage / "new" / "c").write_bytes(b"new chunk")
    (stage / "zarr.json").write_bytes(b'{"new": true}')
    marker = json.dumps({"status": "publishing"}).encode()
    staging.publish(stage, url, marker=marker)
    assert not storage.exists(f"{url}/old/c/0")  # the older forecast's leftovers
    assert (
        storage.read_bytes(f"{url}/new/c") == b"new chunk"
        and storage.read_bytes(f"{url}/zarr.json") == b'{"new": true}'
    )
    assert (
        storage.read_bytes(f"{s3}/fc.zarr.plots/keep.png") == b"someone's"
    )  # beside it: untouched
    assert staging.read_remote_manifest(url) == {"status": "publishing"}
    with pytest.raises(
        Exception, match=r"fc.zarr: the forecast is incomplete \(its manifest says 'publishing'\)"
    ):
        staging.require_published(url)
    # a folder of plots: uploaded file by file, other objects left alone
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "rmse.png").write_bytes(b"png")
    staging.publish(plots, f"{s3}/fc.zarr.plots")
    assert storage.listdir(f"{s3}/fc.zarr.plots") == ["keep.png", "rmse.png"]
