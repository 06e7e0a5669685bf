"""The ``[index]`` configuration: backend, connection string, password from the environment
or a file (never in the connection string, never shown or logged), node id, and one clear
line at ``serve`` start for a bad setting or an unreachable server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from duckpacs import config
from duckpacs.errors import ConfigError
from duckpacs.index import backend
from duckpacs.index.pg.connect import PgConfig, read_password
from tests.helpers import free_port


def test_defaults_keep_the_embedded_index(tmp_path: Path) -> None:
    s = config.load(env={}, cwd=tmp_path)
    assert s["index.backend"] == "duckdb"
    backend.configure(s)
    assert not backend.is_postgres()


def test_postgres_needs_a_connection_string(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="index.dsn"):
        config.load(env={"DUCKPACS_INDEX_BACKEND": "postgres"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="duckdb or postgres"):
        config.load(env={"DUCKPACS_INDEX_BACKEND": "mysql"}, cwd=tmp_path)


@pytest.mark.parametrize(
    "dsn",
    ["postgresql://dp:hunter2secret@db/archive", "host=db dbname=archive password=hunter2secret"],
)
def test_a_password_in_the_connection_string_is_refused_without_echoing_it(
    tmp_path: Path, dsn: str
) -> None:
    env = {"DUCKPACS_INDEX_BACKEND": "postgres", "DUCKPACS_INDEX_DSN": dsn}
    with pytest.raises(ConfigError) as caught:
        config.load(env=env, cwd=tmp_path)
    assert "hunter2secret" not in str(caught.value)
    assert "PGPASSWORD" in str(caught.value)


def test_password_from_the_environment_or_a_file_is_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-the-file\nignored\n")
    assert read_password("PGPASSWORD", str(secret), {}) == "from-the-file"
    assert read_password("DP_PW", "", {"DP_PW": "from-env"}) == "from-env"
    assert read_password("PGPASSWORD", "", {}) is None
    with pytest.raises(ConfigError, match="password_file"):
        read_password("PGPASSWORD", str(tmp_path / "missing"), {})
    shown = repr(PgConfig(dsn="postgresql://dp@db/a", node="n", password="from-env"))
    assert "from-env" not in shown
    cfg = tmp_path / "duckpacs.toml"
    cfg.write_text(
        f'[index]\nbackend = "postgres"\ndsn = "postgresql://dp@db/a"\npassword_file = "{secret}"\n'
    )
    run = subprocess.run(
        [sys.executable, "-m", "duckpacs.cli.main", "config", "show", "--json",
         "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, env={"PGPASSWORD": "env-secret",
                                                        "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "from-the-file" not in run.stdout + run.stderr
    assert "env-secret" not in run.stdout + run.stderr
    assert json.loads(run.stdout)["settings"]["index.backend"]["value"] == "postgres"


def test_node_id_defaults_per_machine_and_data_folder(tmp_path: Path) -> None:
    a, b = backend.default_node(tmp_path / "a"), backend.default_node(tmp_path / "b")
    assert a != b and a == backend.default_node(tmp_path / "a")


def test_missing_driver_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    s = config.load(
        env={"DUCKPACS_INDEX_BACKEND": "postgres", "DUCKPACS_INDEX_DSN": "postgresql://x@y/z"},
        cwd=tmp_path,
    )
    with pytest.raises(ConfigError, match=r"duckpacs\[postgres\]"):
        backend.configure(s)


def test_unreachable_server_is_one_clear_line_at_serve_start(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens there
    cfg = tmp_path / "duckpacs.toml"
    cfg.write_text(
        f'[index]\nbackend = "postgres"\ndsn = "postgresql://dp@127.0.0.1:{dead}/archive"\n'
    )
    run = subprocess.run(
        [sys.executable, "-m", "duckpacs.cli.main", "serve", "--config", str(cfg),
         "--data", str(tmp_path / "data"), "--port", str(free_port()),
         "--http-port", str(free_port())],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin",
                                                        "PGPASSWORD": "pw-not-shown"},
    )  # fmt: skip
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, run.stderr
    assert "PostgreSQL index" in errors[0] and str(dead) in errors[0]
    assert "pw-not-shown" not in run.stdout + run.stderr


def test_a_database_without_an_index_is_one_clear_error_for_readers(pg_cluster: Any) -> None:
    from duckpacs.errors import ArchiveIndexError
    from duckpacs.index.pg.db import PgIndex

    with pytest.raises(ArchiveIndexError, match="no duckpacs index in this database"):
        PgIndex.open(pg_cluster.config(), read_only=True)
