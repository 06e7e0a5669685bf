"""Connections to the PostgreSQL index: settings, password, timeouts, errors.

The password never appears in the configuration's connection string (``config`` refuses
one there) nor in a log line: it comes from an environment variable (``PGPASSWORD`` unless
``index.password_env`` names another) or a file (``index.password_file``), and is handed to
libpq as a separate keyword.

Every connection has a connect timeout and a statement timeout, so a PostgreSQL that is down
or stalled fails a call within seconds instead of hanging a C-STORE or C-FIND past the
peer's own timeout; the index reconnects on the next call (:class:`Connection`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from duckpacs.errors import ArchiveIndexError, ConfigError, IndexUnavailableError

T = TypeVar("T")

EXTRA_HINT = "pip install 'duckpacs[postgres]'"


@dataclass(frozen=True)
class PgConfig:
    """Where the PostgreSQL index is and how this process talks to it.

    ``password`` is kept out of ``repr`` (and so out of any log line that prints the config).
    """

    dsn: str
    node: str
    password: str | None = None
    statement_timeout_s: float = 10.0
    connect_timeout_s: int = 5

    def __repr__(self) -> str:
        return f"PgConfig(dsn={self.dsn!r}, node={self.node!r}, password=<hidden>)"


def read_password(env_name: str, file: str, environ: Any = None) -> str | None:
    """The password: the file's first line when ``file`` is set, else the environment
    variable ``env_name`` (None when unset: libpq may still use ``~/.pgpass``)."""
    if file:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"index.password_file {file}: cannot read it ({e.strerror})") from e
        lines = text.splitlines()
        return lines[0] if lines else ""
    environ = os.environ if environ is None else environ
    value = environ.get(env_name or "PGPASSWORD")
    return value if value else None


def psycopg_module() -> Any:
    """psycopg 3, or one clear line saying which extra installs it."""
    try:
        import psycopg
    except ImportError as e:
        raise ConfigError(
            f"index.backend = postgres needs psycopg 3, which is not installed: {EXTRA_HINT}"
        ) from e
    return psycopg


def connect(config: PgConfig, *, read_only: bool = False) -> Any:
    """A new autocommit connection, session settings applied."""
    psycopg = psycopg_module()
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": config.connect_timeout_s,
        "application_name": f"duckpacs {config.node}",
        # Dead peers are noticed by TCP too, not only by the statement timeout.
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 2,
    }
    if config.password is not None:
        kwargs["password"] = config.password
    options = [
        f"-c statement_timeout={int(config.statement_timeout_s * 1000)}",
        "-c lock_timeout=" + str(int(config.statement_timeout_s * 1000)),
        "-c TimeZone=UTC",
    ]
    if read_only:
        options.append("-c default_transaction_read_only=on")
    kwargs["options"] = " ".join(options)
    try:
        return psycopg.connect(config.dsn, **kwargs)
    except psycopg.OperationalError as e:
        raise IndexUnavailableError(f"PostgreSQL index {_safe(config.dsn)}: {_first(e)}") from e
    except psycopg.ProgrammingError as e:  # a malformed connection string
        raise ConfigError(f"index.dsn: {_first(e)}") from e


def _first(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _safe(dsn: str) -> str:
    """The connection string as it may be logged (config refuses passwords in it anyway)."""
    return dsn.split("?")[0]


class Connection:
    """One PostgreSQL connection shared by threads (calls are serialised), reopened on the
    first call after it broke (PostgreSQL restarted, network cut)."""

    def __init__(self, config: PgConfig, *, read_only: bool = False) -> None:
        self.config = config
        self.read_only = read_only
        self._lock = threading.RLock()
        self._con: Any = connect(config, read_only=read_only)

    def run(self, work: Callable[[Any], T]) -> T:
        """``work(connection)``, a broken connection replaced first; PostgreSQL down or
        slow raises :class:`IndexUnavailableError`, other database errors
        :class:`~duckpacs.errors.ArchiveIndexError`."""
        psycopg = psycopg_module()
        with self._lock:
            if self._con is None or self._con.closed or self._con.broken:
                self._con = None
                self._con = connect(self.config, read_only=self.read_only)
            try:
                return work(self._con)
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                # A timeout (QueryCanceled is an OperationalError) included: the connection
                # is replaced, so nothing of a half-finished call lingers.
                self._drop()
                raise IndexUnavailableError(f"PostgreSQL index: {_first(e)}") from e
            except psycopg.Error as e:  # the database refused the statement itself
                raise ArchiveIndexError(f"PostgreSQL index: {_first(e)}") from e

    def _drop(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            with contextlib.suppress(Exception):  # already broken; nothing to keep
                con.close()

    def close(self) -> None:
        with self._lock:
            self._drop()
