"""``forecast run --out URL``: a forecast for object storage, built in a local stage and published.

The run itself (lock, manifest, resume) happens in the stage
(:func:`forecast.staging.stage`) exactly as for a local ``--out``. Around it,
under the URL's own lock (:func:`forecast.locking.lock`):

- :func:`decide_remote` compares the request with the manifest published
  beside the URL, like :func:`inference.run.decide` does locally: a finished
  forecast of the same request is skipped, another request's or a foreign
  output is refused without ``--overwrite``;
- :func:`publish_run` uploads the finished stage (:func:`forecast.staging.publish`,
  which first replaces the manifest by one with status ``publishing``) and
  writes the finished manifest last, with ``output`` set to the URL, then
  empties the stage. A killed publish leaves the ``publishing`` manifest:
  readers refuse the output, and the same command publishes it again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

from forecast import staging, storage
from forecast.errors import DataError
from inference.request import RunRequest
from inference.schedule import FINISHED, manifest_path, read_manifest

__all__ = ["PUBLISHING", "decide_remote", "publish_run"]

#: Manifest status of a forecast whose objects are being uploaded.
PUBLISHING = "publishing"


def _json(content: dict) -> bytes:
    return (json.dumps(content, indent=2, default=str) + "\n").encode()


def decide_remote(url: str, request: RunRequest) -> Literal["skip", "run"]:
    """Whether the forecast at ``url`` is already published for ``request`` (``"skip"``) or is to be run.

    Raises
    ------
    DataError
        ``url`` holds something not written by ``forecast run``, or a
        forecast of another request (naming the differing settings), and
        ``request.overwrite`` is off.
    """
    if request.overwrite:
        return "run"
    manifest = staging.read_remote_manifest(url)
    if manifest is None:
        if storage.exists(url):
            raise DataError(
                "output exists but was not written by 'forecast run' (no manifest)",
                path=url,
                hint="choose another --out, or pass --overwrite to replace it",
            )
        return "run"
    differ = request.differences(manifest)
    if differ:
        state = "finished" if manifest.get("status") == FINISHED else "unfinished"
        raise DataError(
            f"output holds a {state} forecast with other settings ({', '.join(differ)})",
            path=url,
            hint="choose another --out, or pass --overwrite to replace it",
        )
    return "skip" if manifest.get("status") == FINISHED else "run"


def publish_run(stage: Path, url: str) -> None:
    """Upload the finished forecast in ``stage`` to ``url``, its manifest last, then delete the stage.

    Raises
    ------
    DataError
        If the stage holds no finished forecast.
    """
    manifest = read_manifest(stage)
    if manifest is None or manifest.get("status") != FINISHED:
        raise DataError(
            "the staged forecast is not finished; nothing was published",
            path=stage,
            hint="rerun the command",
        )
    manifest["output"] = url
    marker = {**manifest, "status": PUBLISHING}
    staging.publish(stage, url, marker=_json(marker))
    storage.write_bytes(staging.manifest_url(url), _json(manifest))
    if stage.is_dir():
        shutil.rmtree(stage)
    else:
        stage.unlink(missing_ok=True)
    manifest_path(stage).unlink(missing_ok=True)
