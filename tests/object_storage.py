"""A real S3-compatible server on 127.0.0.1 for the tests (moto in server mode), and buckets on it.

Use the fixtures by importing them into a test module::

    from tests.object_storage import s3, s3_server  # noqa: F401

(or ``s3_module`` for one bucket shared by a module's tests)

``s3`` gives a fresh, empty bucket URL (``s3://test-...``) with the
credentials and endpoint set in the environment the way s3fs reads them
(``AWS_*``): nothing about them is passed to our code.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_MAX_ATTEMPTS": "2",
}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server started for this test session."""
    server_module = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _new_bucket(server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import fsspec

    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": server}.items():
        monkeypatch.setenv(name, value)
    fs = fsspec.filesystem("s3")
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    return f"s3://{bucket}"


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty bucket on the test server, as ``s3://NAME``."""
    return _new_bucket(s3_server, monkeypatch)


@pytest.fixture(scope="module")
def s3_module(s3_server: str) -> Iterator[str]:
    """One bucket for all the tests of a module (the environment set while they run)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield _new_bucket(s3_server, monkeypatch)
