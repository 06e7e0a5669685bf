"""Which index an archive uses: the embedded DuckDB file (default) or PostgreSQL.

The command line loads the settings once and calls :func:`configure`; every place that
opens an archive's index calls :func:`open_index`. With no ``[index]`` configuration this
is exactly ``Index.open`` (nothing else is imported: psycopg is needed only for PostgreSQL).
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

from duckpacs.index.base import IndexBackend
from duckpacs.index.db import Index

_configured: Any = None  # a PgConfig once configured for PostgreSQL, else None


def default_node(data_dir: Path) -> str:
    """A node id unique per machine and data folder: ``<hostname>-<8 hex of the folder>``."""
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}-{digest}"


def configure(settings: Any) -> None:
    """Use the index ``settings`` ask for (``index.backend``) in this process from now on."""
    global _configured
    if settings["index.backend"] != "postgres":
        _configured = None
        return
    from duckpacs.index.pg.connect import PgConfig, psycopg_module, read_password

    psycopg_module()  # one clear line naming the extra when it is missing
    _configured = PgConfig(
        dsn=settings["index.dsn"],
        node=settings["index.node"] or default_node(settings.data_dir),
        password=read_password(settings["index.password_env"], settings["index.password_file"]),
        statement_timeout_s=float(settings["index.timeout"]),
    )


def node() -> str:
    """This process's node id in a shared index ("" with the embedded one)."""
    return str(_configured.node) if _configured is not None else ""


def is_postgres() -> bool:
    return _configured is not None


def open_index(
    path: str | Path, read_only: bool = False, *, check_store: bool = True
) -> IndexBackend:
    """The archive's index: ``Index.open(path, ...)``, or the configured PostgreSQL one."""
    if _configured is None:
        return Index.open(path, read_only, check_store=check_store)
    from duckpacs.index.pg.db import PgIndex

    return PgIndex.open(_configured, read_only)
