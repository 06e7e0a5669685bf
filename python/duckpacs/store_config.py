"""Where the packs live: this node's data folder (default) or S3-compatible object storage.

``[store] backend = "s3"`` (issue 26): every node keeps writing its packs in its own data
folder, seals them and uploads them to ``<prefix>/<node>/<pack file>`` in the bucket; the
packs of other nodes are read from there. This module turns the settings into the one
:class:`S3Store` that ``serve`` and the command line share: the command line loads the
settings once and calls :func:`configure`, and :func:`duckpacs.archive.layout.open_store`
hands :meth:`S3Store.binding` to the Rust store. With the default (``local``) nothing is
configured and ``open_store`` is exactly what it was.

The credentials never appear in the configuration file, ``config show``, a log line or an
error message: they come from two environment variables (``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` unless ``store.access_key_env`` / ``store.secret_key_env`` name
others) or from ``store.credentials_file``, a text file of two lines::

    access_key = AKIAIOSFODNN7EXAMPLE
    secret_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY

(blank lines and ``#`` comments allowed, values optionally in double or single quotes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duckpacs.errors import ConfigError

CREDENTIAL_KEYS = ("access_key", "secret_key")


@dataclass(frozen=True)
class S3Store:
    """The S3 settings of this node. The access and secret keys are kept out of ``repr``
    (and so out of any log line or error that prints the object); :meth:`describe` is what
    may be shown."""

    endpoint: str
    bucket: str
    prefix: str
    region: str
    node: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    cache_bytes: int = 256 * 2**20
    seal_seconds: float = 2.0
    max_pending_bytes: int = 2**30
    timeout_s: float = 10.0

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"S3Store({shown}, access_key=<hidden>, secret_key=<hidden>)"

    def describe(self) -> dict[str, Any]:
        """Everything but the credentials: for ``cluster status``, logs and ``--json``."""
        return {
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "region": self.region,
            "node": self.node,
            "cache_bytes": self.cache_bytes,
            "seal_seconds": self.seal_seconds,
            "max_pending_bytes": self.max_pending_bytes,
            "timeout_s": self.timeout_s,
        }

    def binding(self) -> dict[str, Any]:
        """The ``remote`` argument of ``duckpacs._core.Store``."""
        return {
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "region": self.region,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "node": self.node,
            "cache_bytes": int(self.cache_bytes),
            "timeout_ms": max(1, round(self.timeout_s * 1000)),
        }


def read_credentials(
    access_env: str, secret_env: str, file: str, environ: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """(access key, secret key): from ``file`` when set, else from the two variables.

    Raises :class:`ConfigError` naming where they were looked for, never their values."""
    if file:
        return _read_credentials_file(Path(file))
    environ = os.environ if environ is None else environ
    access, secret = environ.get(access_env, ""), environ.get(secret_env, "")
    missing = [name for name, value in ((access_env, access), (secret_env, secret)) if not value]
    if missing:
        raise ConfigError(
            f"store.backend = s3 needs credentials: {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set (or give store.credentials_file)"
        )
    return access, secret


def _read_credentials_file(path: Path) -> tuple[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"store.credentials_file {path}: cannot read it ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"store.credentials_file {path}: not UTF-8 text") from e
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if not sep or key not in CREDENTIAL_KEYS:
            # The line is not shown: it may be a key written without its name.
            raise ConfigError(
                f"store.credentials_file {path} line {number}: expected "
                "access_key = ... or secret_key = ..."
            )
        found[key] = _unquoted(value.strip())
    missing = [k for k in CREDENTIAL_KEYS if not found.get(k)]
    if missing:
        raise ConfigError(f"store.credentials_file {path}: no {' and no '.join(missing)} in it")
    return found["access_key"], found["secret_key"]


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _node_name(settings: Any) -> str:
    """This node's name: its folder in the bucket, so letters, digits, ``.``, ``_``, ``-``."""
    name = str(settings["index.node"])
    if not name:
        from duckpacs.index.backend import default_node

        name = default_node(settings.data_dir)
    fits = name.isascii() and all(c.isalnum() or c in "._-" for c in name)
    if not fits or name in (".", ".."):
        raise ConfigError(
            f"index.node = {name!r} cannot name this node's folder in the bucket: "
            "use letters, digits, '.', '_' and '-'"
        )
    return name


def from_settings(settings: Any, environ: Mapping[str, str] | None = None) -> S3Store | None:
    """The S3 store ``settings`` ask for, or None with ``store.backend = "local"``."""
    if settings["store.backend"] != "s3":
        return None
    access, secret = read_credentials(
        settings["store.access_key_env"],
        settings["store.secret_key_env"],
        settings["store.credentials_file"],
        environ,
    )
    return S3Store(
        endpoint=settings["store.endpoint"],
        bucket=settings["store.bucket"],
        prefix=settings["store.prefix"],
        region=settings["store.region"],
        node=_node_name(settings),
        access_key=access,
        secret_key=secret,
        cache_bytes=int(settings["store.cache_bytes"]),
        seal_seconds=float(settings["store.seal_seconds"]),
        max_pending_bytes=int(settings["store.max_pending_bytes"]),
        timeout_s=float(settings["store.timeout"]),
    )


_configured: S3Store | None = None


def configure(settings: Any, environ: Mapping[str, str] | None = None) -> None:
    """Use the store ``settings`` ask for in this process from now on."""
    global _configured
    _configured = from_settings(settings, environ)


def configured() -> S3Store | None:
    """The S3 store this process uses, or None (packs in the data folder only)."""
    return _configured
