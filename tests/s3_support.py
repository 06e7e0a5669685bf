"""An S3 endpoint for the tests of packs on object storage (issue 26): ``s3s-fs``, which
speaks the real S3 protocol (SigV4-signed requests, ranged GETs) over a folder.

``make s3s-fs`` builds it into ``.cache/s3s-fs/bin/s3s-fs`` (``make test`` does it first). A
test that needs it and does not find it fails with that instruction instead of skipping:
the object-storage tests must not pass by not running.

:class:`S3Server` runs one on a free 127.0.0.1 port over a temporary root folder, with one
access key and one bucket (a bucket of s3s-fs is a folder of the root, an object a file
under it). :meth:`S3Server.stop` and :meth:`S3Server.start` take it away and bring it back
on the same port and root (the fault tests), like an object store that crashed or became
unreachable and then came back with everything it had stored.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port

BINARY = Path(__file__).resolve().parent.parent / ".cache" / "s3s-fs" / "bin" / "s3s-fs"
STARTUP_SECONDS = 30.0


def binary() -> Path:
    """The s3s-fs executable, or the test fails saying how to build it."""
    if not os.access(BINARY, os.X_OK):
        pytest.fail(f"{BINARY} is missing: run `make s3s-fs` (`make test` builds it first)")
    return BINARY


class S3Server:
    """A running s3s-fs (see the module docstring). The keys are test values, not secrets."""

    ACCESS_KEY = "duckpacs-test-access"
    SECRET_KEY = "duckpacs-test-secret-key"
    BUCKET = "duckpacs-test"
    REGION = "us-east-1"

    def __init__(self, root: Path | None = None) -> None:
        self.exe = binary()
        self.root = root or Path(tempfile.mkdtemp(prefix="duckpacs-s3-"))
        (self.root / self.BUCKET).mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = self.root.parent / f"{self.root.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Run it (again) on the same port and root; returns once it answers requests."""
        if self.process is not None and self.process.poll() is None:
            return
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.exe), "--host", "127.0.0.1", "--port", str(self.port),
                 "--access-key", self.ACCESS_KEY, "--secret-key", self.SECRET_KEY,
                 str(self.root)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self._wait_until_answering()

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"s3s-fs exited with {self.process.returncode} at start: {self.log_tail()}"
                )
            if self.answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"s3s-fs did not answer within {STARTUP_SECONDS:.0f} s: "
                                   f"{self.log_tail()}")  # fmt: skip
            time.sleep(0.05)

    def answers(self) -> bool:
        """True when it answers an unsigned request the S3 way: 403 with an XML error
        (it requires SigV4 signatures, since it was given credentials)."""
        try:
            urllib.request.urlopen(f"{self.endpoint}/{self.BUCKET}", timeout=2)
        except urllib.error.HTTPError as e:
            return e.code == 403 and b"<Error>" in e.read()
        except OSError:
            return False
        return False  # a success for an unsigned request: not the server we started

    def stop(self) -> None:
        """Take it away at once (SIGKILL, as a crash or a cut cable: open connections drop).
        What it stored stays in the root for :meth:`start`."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def objects(self, prefix: str = "") -> list[str]:
        """The keys stored in the bucket under ``prefix``, sorted (read from its folder)."""
        bucket = self.root / self.BUCKET
        keys = (p.relative_to(bucket).as_posix() for p in bucket.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix))

    def environment(self, prefix: str = "duckpacs") -> dict[str, str]:
        """The variables that point a duckpacs process at this endpoint (``[store]``)."""
        return {
            "DUCKPACS_STORE_BACKEND": "s3",
            "DUCKPACS_STORE_ENDPOINT": self.endpoint,
            "DUCKPACS_STORE_BUCKET": self.BUCKET,
            "DUCKPACS_STORE_PREFIX": prefix,
            "DUCKPACS_STORE_REGION": self.REGION,
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
        }

    def remote(self, node: str, prefix: str = "duckpacs", **overrides: Any) -> dict[str, Any]:
        """The ``remote`` argument of ``duckpacs._core.Store`` for ``node``."""
        return {
            "endpoint": self.endpoint,
            "bucket": self.BUCKET,
            "prefix": prefix,
            "region": self.REGION,
            "access_key": self.ACCESS_KEY,
            "secret_key": self.SECRET_KEY,
            "node": node,
            "cache_bytes": 64 * 2**20,
            "timeout_ms": 5000,
            **overrides,
        }

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.log.unlink()


@pytest.fixture
def s3_server() -> Iterator[S3Server]:
    """An s3s-fs of its own for one test (an empty bucket), stopped and removed after it."""
    server = S3Server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test bucket's keys in the default variables, which the duckpacs processes a test
    starts read (``store.access_key_env`` / ``store.secret_key_env``)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3Server.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3Server.SECRET_KEY)
