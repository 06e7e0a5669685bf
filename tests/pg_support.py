"""A temporary PostgreSQL cluster for the tests of the PostgreSQL index (Debian's
``postgresql``; initdb runs as the ``postgres`` user when the tests run as root, as
``bench/bench_pg_index.py`` does). One cluster per session on a free port; each user of it
gets a database of its own (:meth:`Cluster.database`). It can be stopped and started again
(the fault tests)."""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from duckpacs.index.pg.connect import PgConfig


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else None


def available() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return _pg_bin("initdb") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A running temporary cluster (user ``duckpacs``, password auth over TCP)."""

    PASSWORD = "test-secret-pw"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="duckpacs-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root
            shutil.chown(self.root, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = _free_port()
        self.data = self.root / "db"
        pwfile = self.root / "pw"
        pwfile.write_text(self.PASSWORD + "\n")
        if self.as_user:
            shutil.chown(pwfile, "postgres")
        self._pg(
            "initdb", "-D", str(self.data), "-U", "duckpacs", "-E", "UTF8",
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
        )  # fmt: skip
        self._names = itertools.count(1)
        self.start()

    def _pg(self, tool: str, *args: str) -> None:
        exe = _pg_bin(tool)
        assert exe is not None
        subprocess.run([*self.as_user, exe, *args], check=True, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                 "-w", "start")  # fmt: skip

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def database(self) -> str:
        """A new empty database; returns its connection string (no password in it)."""
        name = f"archive{next(self._names)}"
        exe = _pg_bin("createdb")
        assert exe is not None
        subprocess.run(
            [exe, "-h", str(self.root), "-p", str(self.port), "-U", "duckpacs", name],
            check=True, capture_output=True,
        )  # fmt: skip
        return f"postgresql://duckpacs@127.0.0.1:{self.port}/{name}"

    def config(self, node: str = "node-a", dsn: str | None = None) -> PgConfig:
        return PgConfig(dsn=dsn or self.database(), node=node, password=self.PASSWORD)

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    if not available():
        pytest.skip("PostgreSQL (Debian postgresql) or psycopg (duckpacs[postgres]) missing")
    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(params=["duckdb", "postgres"])
def each_index_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test on the embedded index and again on a PostgreSQL one (a new database),
    in this process and in every duckpacs process it starts (through the environment)."""
    from duckpacs import config
    from duckpacs.index import backend

    if request.param == "duckdb":
        yield "duckdb"
        return
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("DUCKPACS_INDEX_BACKEND", "postgres")
    monkeypatch.setenv("DUCKPACS_INDEX_DSN", cluster.database())
    monkeypatch.setenv("DUCKPACS_NODE", "test-node")  # the same node in every process
    monkeypatch.setenv("PGPASSWORD", Cluster.PASSWORD)
    backend.configure(config.load())
    try:
        yield "postgres"
    finally:
        monkeypatch.undo()
        backend.configure(config.load())


def drop_index(data: Path) -> None:
    """Lose the archive's index (the next opening rebuilds it from the store): the embedded
    file removed, or the PostgreSQL tables emptied (marks included)."""
    import os

    if os.environ.get("DUCKPACS_INDEX_BACKEND") != "postgres":
        (data / "index.duckdb").unlink()
        return
    import psycopg

    with psycopg.connect(os.environ["DUCKPACS_INDEX_DSN"], autocommit=True) as con:
        con.execute("TRUNCATE instances, attributes, series, studies, patients, store_marks")
