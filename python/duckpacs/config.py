"""Configuration: one TOML file, overridden by ``DUCKPACS_*`` variables, overridden by flags.

Precedence (highest first): command-line flag, environment variable, configuration file,
built-in default. :func:`load` returns a :class:`Settings` that remembers where each value came
from, so ``duckpacs config show`` can tell the user.

Which file is read: ``--config FILE``, else ``$DUCKPACS_CONFIG``, else ``./duckpacs.toml``,
else ``duckpacs.toml`` inside the data folder (the one ``duckpacs init`` writes).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duckpacs import logs
from duckpacs.errors import ConfigError

log = logs.get("config")

CONFIG_FILENAME = "duckpacs.toml"
# Keys earlier versions wrote, now without effect: read with a warning, never an error.
RETIRED = {"archive.workers": "one process serves every association now"}
DEFAULT_DATA_DIR = "./duckpacs-data"
PERMISSIONS = ("echo", "store", "find", "move", "get")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


# --- validators: each returns the normalised value or raises ValueError(what is allowed) ---


def _ae_title(value: Any) -> str:
    # PS3.5 6.2, VR AE: 1-16 characters of the default repertoire, no backslash or control
    # characters; leading and trailing spaces are not significant.
    if not isinstance(value, str):
        raise ValueError("a text of 1 to 16 characters")
    title = value.strip()
    if not 1 <= len(title) <= 16 or "\\" in title or not title.isascii():
        raise ValueError("1 to 16 ASCII characters, no backslash (PS3.5 6.2, VR AE)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in title):
        raise ValueError("1 to 16 ASCII characters, no control characters (PS3.5 6.2, VR AE)")
    return title


def _port(value: Any) -> int:
    number = _integer(value, "an integer from 1 to 65535")
    if not 1 <= number <= 65535:
        raise ValueError("an integer from 1 to 65535")
    return number


def _optional_port(value: Any) -> int:
    allowed = "0 (off) or an integer from 1 to 65535"
    number = _integer(value, allowed)
    if not 0 <= number <= 65535:
        raise ValueError(allowed)
    return number


def _integer(value: Any, allowed: str) -> int:
    if isinstance(value, bool):
        raise ValueError(allowed)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ValueError(allowed)


def _bind_address(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("an IP address such as 0.0.0.0, 127.0.0.1 or ::")
    if value == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("an IP address such as 0.0.0.0, 127.0.0.1 or ::") from None


def _log_level(value: Any) -> str:
    if isinstance(value, str) and value.upper() in LOG_LEVELS:
        return value.upper()
    raise ValueError("one of " + ", ".join(LOG_LEVELS))


def _data_dir(value: Any) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a folder path")
    return Path(value).expanduser()


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    ):
        return value.lower() in ("1", "true", "yes", "on")
    raise ValueError("true or false")


def _anonymous(value: Any) -> str:
    allowed = ("loopback", "any", "off")
    if isinstance(value, str) and value.lower() in allowed:
        return value.lower()
    raise ValueError("one of " + ", ".join(allowed))


def _origins(value: Any) -> list[str]:
    allowed = 'a list of origins such as "https://viewer.example.org", or "*"'
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",") if p.strip()]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError(allowed)
    for origin in value:
        if origin != "*" and not (
            origin.startswith(("http://", "https://")) and "/" not in origin.split("://", 1)[1]
        ):
            raise ValueError(allowed + f" (bad: {origin!r})")
    return list(value)


def _optional_file(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a file path, or empty")
    return str(Path(value).expanduser()) if value.strip() else ""


def _permissions(value: Any) -> frozenset[str]:
    allowed = "a list drawn from " + ", ".join(PERMISSIONS)
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",") if p.strip()]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError(allowed)
    lowered = {p.lower() for p in value}
    if not lowered <= set(PERMISSIONS):
        raise ValueError(allowed)
    return frozenset(lowered)


def _max_pdu(value: Any) -> int:
    allowed = "0 (no limit) or an integer from 4096 to 16777216"
    number = _integer(value, allowed)
    if number != 0 and not 4096 <= number <= 16777216:
        raise ValueError(allowed)
    return number


def _max_associations(value: Any) -> int:
    allowed = "an integer from 1 to 1000"
    number = _integer(value, allowed)
    if not 1 <= number <= 1000:
        raise ValueError(allowed)
    return number


def _days(value: Any) -> int:
    allowed = "a number of days from 0 to 3650"
    number = _integer(value, allowed)
    if not 0 <= number <= 3650:
        raise ValueError(allowed)
    return number


def _timeout(value: Any) -> int:
    allowed = "a number of seconds from 1 to 86400"
    number = _integer(value, allowed)
    if not 1 <= number <= 86400:
        raise ValueError(allowed)
    return number


_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip


def _size(value: Any) -> int:
    """A number of bytes: an integer, or a text such as "500 GB" or "1.5 TiB"; 0 = no limit."""
    allowed = 'a number of bytes such as 0 (no limit) or "500 GB" (B, KB, MB, GB, TB, KiB ... TiB)'
    if isinstance(value, bool):
        raise ValueError(allowed)
    if isinstance(value, int):
        number: float = value
    elif isinstance(value, str):
        text = value.strip().lower().replace("_", "")
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz").strip()
        unit = text[len(digits) :].strip()
        try:
            number = float(digits) * _SIZE_UNITS[unit]
        except (ValueError, KeyError):
            raise ValueError(allowed) from None
    else:
        raise ValueError(allowed)
    if number < 0:
        raise ValueError(allowed)
    return int(number)


def _lifetime(value: Any) -> int:
    allowed = "a number of seconds from 60 to 31622400 (366 days)"
    number = _integer(value, allowed)
    if not 60 <= number <= 366 * 86400:
        raise ValueError(allowed)
    return number


def _on_limit(value: Any) -> str:
    if isinstance(value, str) and value.lower() in ("refuse", "recycle"):
        return value.lower()
    raise ValueError("refuse (answer 0xA700 / 507) or recycle (remove the oldest studies)")


def _associations(value: Any) -> int:
    allowed = "an integer from 1 to 16"
    number = _integer(value, allowed)
    if not 1 <= number <= 16:
        raise ValueError(allowed)
    return number


def _attempts(value: Any) -> int:
    allowed = "an integer from 1 to 1000"
    number = _integer(value, allowed)
    if not 1 <= number <= 1000:
        raise ValueError(allowed)
    return number


def _hours(value: Any) -> int:
    allowed = "a number of hours from 0 (never) to 87600"
    number = _integer(value, allowed)
    if not 0 <= number <= 87600:
        raise ValueError(allowed)
    return number


def _on_conflict(value: Any) -> str:
    if isinstance(value, str) and value.lower() in ("keep-first", "replace"):
        return value.lower()
    raise ValueError("keep-first or replace")


def _index_backend(value: Any) -> str:
    if isinstance(value, str) and value.lower() in ("duckdb", "postgres"):
        return value.lower()
    raise ValueError("duckdb or postgres")


def _dsn(value: Any) -> str:
    """A libpq connection string (URI or key=value) without a password: the password comes
    from the environment or a file, so it is never in a file that is shown or logged."""
    if not isinstance(value, str):
        raise ValueError("a PostgreSQL connection string")
    text = value.strip()
    lowered = text.lower()
    in_uri = (
        lowered.startswith(("postgresql://", "postgres://"))
        and ":" in text.split("://", 1)[1].split("@", 1)[0]
        and "@" in text
    )
    if in_uri or "password=" in lowered:
        raise ValueError(
            "a connection string without a password (give it in PGPASSWORD, the variable "
            "named by index.password_env, or index.password_file)"
        )
    return text


def _env_name(value: Any) -> str:
    if isinstance(value, str) and (not value or value.replace("_", "a").isalnum()):
        return value
    raise ValueError("an environment variable name")


def _seconds(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("a number of seconds") from None
    if not 0.1 <= number <= 3600:
        raise ValueError("seconds between 0.1 and 3600")
    return number


def _store_backend(value: Any) -> str:
    if isinstance(value, str) and value.lower() in ("local", "s3"):
        return value.lower()
    raise ValueError("local or s3")


def _endpoint(value: Any) -> str:
    """An S3 endpoint URL: http(s)://host[:port][/path], no credentials in it (they come
    from the environment or store.credentials_file, so the URL may be shown and logged)."""
    allowed = "an http:// or https:// URL such as https://s3.eu-west-1.amazonaws.com"
    if not isinstance(value, str):
        raise ValueError(allowed)
    text = value.strip().rstrip("/")
    if not text:
        return ""
    scheme, sep, rest = text.partition("://")
    host = rest.split("/", 1)[0]
    if not sep or scheme.lower() not in ("http", "https") or not host or " " in text:
        raise ValueError(allowed)
    if "@" in host:
        raise ValueError("an URL without credentials (give them in the environment or "
                         "store.credentials_file)")  # fmt: skip
    return text


def _bucket(value: Any) -> str:
    """An S3 bucket name (3 to 63 of a-z 0-9 . -, starting and ending with a letter or digit)."""
    allowed = "a bucket name: 3 to 63 lowercase letters, digits, dots and hyphens"
    if not isinstance(value, str):
        raise ValueError(allowed)
    text = value.strip()
    if not text:
        return ""
    ok = set("abcdefghijklmnopqrstuvwxyz0123456789.-")
    if not 3 <= len(text) <= 63 or set(text) - ok or not (text[0] + text[-1]).isalnum():
        raise ValueError(allowed)
    return text


def _key_prefix(value: Any) -> str:
    """The folder of the archive's objects in the bucket: path segments of A-Z a-z 0-9 . _ -."""
    allowed = 'a key prefix such as "duckpacs" or "site-a/archive" (letters, digits, . _ - /)'
    if not isinstance(value, str):
        raise ValueError(allowed)
    text = value.strip().strip("/")
    segments = text.split("/")
    if not text or any(not s or s in (".", "..") or not _object_name(s) for s in segments):
        raise ValueError(allowed)
    return text


def _object_name(text: str) -> bool:
    return all(c.isascii() and (c.isalnum() or c in "._-") for c in text)


def _region(value: Any) -> str:
    if isinstance(value, str) and value.strip() and _object_name(value.strip()):
        return value.strip()
    raise ValueError("a region name such as us-east-1")


@dataclass(frozen=True)
class Option:
    """One scalar setting: its TOML key, environment variable, validator and default."""

    key: str
    env: str
    parse: Callable[[Any], Any]
    default: Any
    help: str


OPTIONS: tuple[Option, ...] = (
    Option(
        "archive.data_dir",
        "DUCKPACS_DATA_DIR",
        _data_dir,
        DEFAULT_DATA_DIR,
        "folder holding the store, the index and the logs",
    ),
    Option(
        "archive.log_level",
        "DUCKPACS_LOG_LEVEL",
        _log_level,
        "INFO",
        "DEBUG, INFO, WARNING or ERROR",
    ),
    Option(
        "dimse.ae_title",
        "DUCKPACS_AE_TITLE",
        _ae_title,
        "DUCKPACS",
        "our Application Entity title; called AE titles must match it",
    ),
    Option("dimse.port", "DUCKPACS_DIMSE_PORT", _port, 11112, "DIMSE listening port"),
    Option(
        "dimse.bind",
        "DUCKPACS_DIMSE_BIND",
        _bind_address,
        "0.0.0.0",
        "address the DIMSE listener binds to",
    ),
    Option(
        "dimse.accept_any",
        "DUCKPACS_ACCEPT_ANY",
        _boolean,
        False,
        "accept associations from any calling AE title with every permission (unsafe)",
    ),
    Option(
        "dimse.unknown_peer_permissions",
        "DUCKPACS_UNKNOWN_PEER_PERMISSIONS",
        _permissions,
        ["echo"],
        "what a calling AE that is not a configured peer may do",
    ),
    Option(
        "dimse.check_peer_host",
        "DUCKPACS_CHECK_PEER_HOST",
        _boolean,
        False,
        "also require a configured peer to call from its configured host",
    ),
    Option(
        "dimse.max_pdu",
        "DUCKPACS_MAX_PDU",
        _max_pdu,
        262144,
        "largest PDU we accept, in bytes (0 = no limit; PS3.8 D.1)",
    ),
    Option(
        "dimse.max_associations",
        "DUCKPACS_MAX_ASSOCIATIONS",
        _max_associations,
        32,
        "associations served at once",
    ),
    Option(
        "dimse.idle_timeout",
        "DUCKPACS_IDLE_TIMEOUT",
        _timeout,
        60,
        "seconds an association may stay silent before we close it",
    ),
    Option(
        "dimse.shutdown_grace",
        "DUCKPACS_SHUTDOWN_GRACE",
        _timeout,
        10,
        "seconds associations may take to finish when the archive stops, then they are aborted",
    ),
    Option(
        "dimse.tls_port",
        "DUCKPACS_DIMSE_TLS_PORT",
        _optional_port,
        0,
        "DICOM TLS listening port beside the plain one (0: none; PS3.15 B.9)",
    ),
    Option(
        "dimse.tls_cert",
        "DUCKPACS_DIMSE_TLS_CERT",
        _optional_file,
        "",
        "PEM certificate (and chain) for DICOM TLS, shown to callers and to TLS peers",
    ),
    Option(
        "dimse.tls_key",
        "DUCKPACS_DIMSE_TLS_KEY",
        _optional_file,
        "",
        "PEM private key of dimse.tls_cert",
    ),
    Option(
        "dimse.tls_ca",
        "DUCKPACS_DIMSE_TLS_CA",
        _optional_file,
        "",
        "PEM CA certificates: TLS peers must chain to them; set, callers need a certificate too",
    ),
    Option(
        "index.backend",
        "DUCKPACS_INDEX_BACKEND",
        _index_backend,
        "duckdb",
        "where the index lives: duckdb (embedded file, default) or postgres (index.dsn)",
    ),
    Option(
        "index.dsn",
        "DUCKPACS_INDEX_DSN",
        _dsn,
        "",
        "PostgreSQL connection string (no password in it) when index.backend = postgres",
    ),
    Option(
        "index.password_env",
        "DUCKPACS_INDEX_PASSWORD_ENV",
        _env_name,
        "PGPASSWORD",
        "environment variable holding the PostgreSQL password",
    ),
    Option(
        "index.password_file",
        "DUCKPACS_INDEX_PASSWORD_FILE",
        _optional_file,
        "",
        "file whose first line is the PostgreSQL password (instead of index.password_env)",
    ),
    Option(
        "index.node",
        "DUCKPACS_NODE",
        str,
        "",
        "this node's id in a shared index (default: hostname and a hash of the data folder)",
    ),
    Option(
        "index.timeout",
        "DUCKPACS_INDEX_TIMEOUT",
        _seconds,
        10.0,
        "seconds a PostgreSQL statement may take before the call fails (C-STORE, C-FIND)",
    ),
    Option(
        "store.backend",
        "DUCKPACS_STORE_BACKEND",
        _store_backend,
        "local",
        "where sealed packs live: local (the data folder, default) or s3 (needs index postgres)",
    ),
    Option(
        "store.endpoint",
        "DUCKPACS_STORE_ENDPOINT",
        _endpoint,
        "",
        "S3 endpoint URL (http or https) when store.backend = s3",
    ),
    Option("store.bucket", "DUCKPACS_STORE_BUCKET", _bucket, "", "S3 bucket of the packs"),
    Option(
        "store.prefix",
        "DUCKPACS_STORE_PREFIX",
        _key_prefix,
        "duckpacs",
        "key prefix in the bucket; each node's packs go under <prefix>/<index.node>/",
    ),
    Option("store.region", "DUCKPACS_STORE_REGION", _region, "us-east-1", "S3 region (signing)"),
    Option(
        "store.access_key_env",
        "DUCKPACS_STORE_ACCESS_KEY_ENV",
        _env_name,
        "AWS_ACCESS_KEY_ID",
        "environment variable holding the S3 access key id",
    ),
    Option(
        "store.secret_key_env",
        "DUCKPACS_STORE_SECRET_KEY_ENV",
        _env_name,
        "AWS_SECRET_ACCESS_KEY",
        "environment variable holding the S3 secret access key",
    ),
    Option(
        "store.credentials_file",
        "DUCKPACS_STORE_CREDENTIALS_FILE",
        _optional_file,
        "",
        "file with access_key = ... and secret_key = ... lines (instead of the variables)",
    ),
    Option(
        "store.cache_bytes",
        "DUCKPACS_STORE_CACHE_BYTES",
        _size,
        "256 MiB",
        "bytes of the ranges read from S3 that this node keeps in its cache",
    ),
    Option(
        "store.seal_seconds",
        "DUCKPACS_STORE_SEAL_SECONDS",
        _seconds,
        2.0,
        "seconds after which an open pack is sealed and uploaded",
    ),
    Option(
        "store.max_pending_bytes",
        "DUCKPACS_STORE_MAX_PENDING_BYTES",
        _size,
        "1 GiB",
        "bytes of sealed packs not yet uploaded above which arrivals are refused",
    ),
    Option(
        "store.local_bytes",
        "DUCKPACS_STORE_LOCAL_BYTES",
        _size,
        "0",
        "with s3: disk this node's packs may take; above it uploaded, indexed packs are "
        "removed oldest first and read from the bucket (0: keep every pack on this disk)",
    ),
    Option(
        "store.timeout",
        "DUCKPACS_STORE_TIMEOUT",
        _seconds,
        10.0,
        "seconds an S3 request may take before it fails",
    ),
    Option(
        "archive.on_conflict",
        "DUCKPACS_ON_CONFLICT",
        _on_conflict,
        "keep-first",
        "a known SOP Instance UID with different bytes: keep-first (warn) or replace",
    ),
    Option(
        "archive.trash_days",
        "DUCKPACS_TRASH_DAYS",
        _days,
        7,
        "days deleted instances stay restorable; `duckpacs compact` reclaims them after that",
    ),
    Option(
        "backup.warn_days",
        "DUCKPACS_BACKUP_WARN_DAYS",
        _days,
        2,
        "the admin page warns when the last `duckpacs backup` is older (0 = never warns)",
    ),
    Option(
        "archive.max_bytes",
        "DUCKPACS_MAX_BYTES",
        _size,
        0,
        "most bytes the archive's instances may take in the store (0 = no limit)",
    ),
    Option(
        "archive.min_free_bytes",
        "DUCKPACS_MIN_FREE_BYTES",
        _size,
        0,
        "free space to keep on the data folder's disk (0 = no limit)",
    ),
    Option(
        "archive.on_limit",
        "DUCKPACS_ON_LIMIT",
        _on_limit,
        "refuse",
        "at a storage limit: refuse new instances, or recycle the oldest unprotected studies",
    ),
    Option(
        "routing.retry_initial",
        "DUCKPACS_RETRY_INITIAL",
        _timeout,
        10,
        "seconds before the first retry of a destination or an instance; doubles each time",
    ),
    Option(
        "routing.retry_max",
        "DUCKPACS_RETRY_MAX",
        _timeout,
        600,
        "longest wait between retries, in seconds",
    ),
    Option(
        "routing.associations",
        "DUCKPACS_ROUTING_ASSOCIATIONS",
        _associations,
        2,
        "associations forwarding to one destination at once",
    ),
    Option(
        "routing.max_attempts",
        "DUCKPACS_MAX_ATTEMPTS",
        _attempts,
        10,
        "refusals of one instance by a destination before it is marked failed",
    ),
    Option(
        "worklist.expire_hours",
        "DUCKPACS_WORKLIST_EXPIRE_HOURS",
        _hours,
        72,
        "hours after its scheduled start a step never started leaves the worklist (0: never)",
    ),
    Option(
        "worklist.keep_done_hours",
        "DUCKPACS_WORKLIST_KEEP_DONE_HOURS",
        _hours,
        24,
        "hours a completed, discontinued or cancelled entry is kept (0: for ever)",
    ),
    Option(
        "worklist.complete_on_arrival",
        "DUCKPACS_WORKLIST_COMPLETE_ON_ARRIVAL",
        _boolean,
        False,
        "complete an entry once the archive holds its study (for modalities without MPPS)",
    ),
    Option(
        "hl7.port",
        "DUCKPACS_HL7_PORT",
        _optional_port,
        0,
        "HL7 v2 over MLLP listening port (orders and patient updates); 0 leaves it off",
    ),
    Option(
        "hl7.bind",
        "DUCKPACS_HL7_BIND",
        _bind_address,
        "0.0.0.0",
        "address the HL7 listener binds to",
    ),
    Option("http.port", "DUCKPACS_HTTP_PORT", _port, 8042, "HTTP listening port"),
    Option(
        "http.bind",
        "DUCKPACS_HTTP_BIND",
        _bind_address,
        "127.0.0.1",
        "address the HTTP listener binds to",
    ),
    Option(
        "http.anonymous",
        "DUCKPACS_HTTP_ANONYMOUS",
        _anonymous,
        "loopback",
        "who may use the web and DICOMweb without logging in: loopback, any or off",
    ),
    Option(
        "http.cors_origins",
        "DUCKPACS_HTTP_CORS_ORIGINS",
        _origins,
        [],
        "origins allowed to call DICOMweb from a browser (CORS); empty for none",
    ),
    Option(
        "http.max_body",
        "DUCKPACS_HTTP_MAX_BODY",
        _size,
        "4 GiB",
        "largest request body accepted (a STOW-RS upload); larger ones get 413 (0 = no limit)",
    ),
    Option(
        "http.header_timeout",
        "DUCKPACS_HTTP_HEADER_TIMEOUT",
        _timeout,
        10,
        "seconds a client may take to send a request's headers (slow clients are cut off)",
    ),
    Option(
        "http.session_ttl",
        "DUCKPACS_HTTP_SESSION_TTL",
        _lifetime,
        12 * 3600,
        "seconds a web login lasts",
    ),
    Option(
        "http.token_ttl",
        "DUCKPACS_HTTP_TOKEN_TTL",
        _lifetime,
        30 * 86400,
        "seconds a bearer token from POST /api/tokens lasts",
    ),
    Option(
        "http.allow_exposed",
        "DUCKPACS_HTTP_ALLOW_EXPOSED",
        _boolean,
        False,
        "serve anonymous access on a non-loopback address with no user configured",
    ),
    Option(
        "http.tls_cert",
        "DUCKPACS_HTTP_TLS_CERT",
        _optional_file,
        "",
        "PEM certificate file; with http.tls_key, HTTP is served as HTTPS",
    ),
    Option(
        "http.tls_key",
        "DUCKPACS_HTTP_TLS_KEY",
        _optional_file,
        "",
        "PEM private key file of http.tls_cert",
    ),
)
OPTIONS_BY_KEY = {o.key: o for o in OPTIONS}
PEER_KEYS = {"ae_title", "host", "port", "permissions", "tls", "tls_name", "tls_fingerprint"}
ROUTE_KEYS = {"name", "match", "to", "trigger", "stable_seconds"}
RETENTION_KEYS = {"name", "match", "keep_days"}
TRIGGERS = ("instance", "stable-study")
# Matched on the instance's provenance (the index's source_ae), not on a DICOM attribute.
CALLING_AE = "CallingAE"


@dataclass(frozen=True)
class Peer:
    """A known DICOM node: who may call us, and whom we call for C-MOVE and send."""

    name: str
    ae_title: str
    host: str
    port: int
    permissions: frozenset[str]
    # DICOM TLS (PS3.15 B.9): we dial it over TLS; when it calls us, its certificate must
    # carry this Common Name or SHA-256 fingerprint (lowercase hex), if given.
    tls: bool = False
    tls_name: str = ""
    tls_fingerprint: str = ""


@dataclass(frozen=True)
class Route:
    """A ``[[route]]`` entry: which instances go to which peers, and when.

    ``match`` maps DICOM keywords (and ``CallingAE``) to query values matched as C-FIND
    matches them (PS3.4 C.2.2.2: wildcards, ranges, lists); empty matches everything.
    ``trigger`` is ``instance`` (each matching instance as it is indexed) or
    ``stable-study`` (the whole study of a matching instance, once no instance of it has
    arrived for ``stable_seconds``).
    """

    name: str
    match: dict[str, Any]
    to: tuple[str, ...]
    trigger: str = "instance"
    stable_seconds: int = 60


@dataclass(frozen=True)
class Retention:
    """A ``[[retention]]`` entry: studies matching ``match`` (study-level keys) are removed
    once ``keep_days`` have passed since their Study Date (or, without one, since they were
    received), unless protected."""

    name: str
    match: dict[str, Any]
    keep_days: int


@dataclass
class Settings:
    """The effective configuration and, per key, where its value came from."""

    values: dict[str, Any]
    sources: dict[str, str]
    peers: dict[str, Peer] = field(default_factory=dict)
    config_file: Path | None = None
    routes: list[Route] = field(default_factory=list)
    retention: list[Retention] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def data_dir(self) -> Path:
        return Path(self.values["archive.data_dir"])

    @property
    def ae_title(self) -> str:
        return str(self.values["dimse.ae_title"])

    def peer_by_ae_title(self, ae_title: str) -> Peer | None:
        title = ae_title.strip()
        return next((p for p in self.peers.values() if p.ae_title == title), None)

    def peer(self, name: str) -> Peer:
        """A peer by its name under ``[peers]``, by its AE title, or written ``AE@host:port``
        (a node not configured: the command line's and the queue's way to name one)."""
        if name in self.peers:
            return self.peers[name]
        by_title = self.peer_by_ae_title(name)
        if by_title is not None:
            return by_title
        title, at, address = name.partition("@")
        host, colon, port = address.rpartition(":")
        if at and colon and title and host and port.isdigit() and 0 < int(port) < 65536:
            return Peer(name=name, ae_title=title, host=host, port=int(port),
                        permissions=frozenset(PERMISSIONS))  # fmt: skip
        known = ", ".join(sorted(self.peers)) or "none configured"
        raise ConfigError(
            f"unknown peer {name!r}: give a configured peer ({known}) or AE@host:port"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "config_file": str(self.config_file) if self.config_file else None,
            "settings": {
                k: {"value": _jsonable(v), "source": self.sources[k]}
                for k, v in self.values.items()
            },
            "peers": {
                name: {
                    "ae_title": p.ae_title,
                    "host": p.host,
                    "port": p.port,
                    "permissions": sorted(p.permissions),
                }
                for name, p in self.peers.items()
            },
            "routes": [
                {
                    "name": r.name,
                    "match": r.match,
                    "to": list(r.to),
                    "trigger": r.trigger,
                    "stable_seconds": r.stable_seconds,
                }
                for r in self.routes
            ],  # fmt: skip
            "retention": [
                {"name": r.name, "match": r.match, "keep_days": r.keep_days} for r in self.retention
            ],
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, frozenset | set):
        return sorted(value)
    return value


def load(
    *,
    config_path: str | os.PathLike[str] | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve the effective settings.

    ``flags`` maps option keys (``"dimse.port"``) to values given on the command line;
    ``None`` values are ignored. Raises :class:`ConfigError` with one line naming the key,
    the bad value and what is allowed.
    """
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    cwd = cwd or Path.cwd()

    path = _find_config_file(config_path, flags, env, cwd)
    document = _read_toml(path) if path else {}
    file_values, peers = _flatten(document, path)
    routes = [
        _parse_route(i, t, peers, path) for i, t in enumerate(_entries(document, "route", path))
    ]
    _unique_names("route", [r.name for r in routes], path)
    retention = [
        _parse_retention(i, t, path) for i, t in enumerate(_entries(document, "retention", path))
    ]
    _unique_names("retention", [r.name for r in retention], path)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        if option.key in flags:
            raw, source = flags[option.key], "flag"
        elif option.env in env:
            raw, source = env[option.env], f"env {option.env}"
        elif option.key in file_values:
            raw, source = file_values[option.key], f"file {path}"
        else:
            raw, source = option.default, "default"
        values[option.key] = _validate(option, raw, source)
        sources[option.key] = source
    # A relative data folder in a config file is relative to that file, not to the cwd.
    if sources["archive.data_dir"].startswith("file") and path is not None:
        values["archive.data_dir"] = (path.parent / values["archive.data_dir"]).resolve()
    else:
        values["archive.data_dir"] = (cwd / values["archive.data_dir"]).resolve()
    if values["index.backend"] == "postgres" and not values["index.dsn"]:
        raise ConfigError(
            f"{sources['index.backend']}: index.backend = postgres needs index.dsn "
            "(a PostgreSQL connection string, e.g. postgresql://duckpacs@db.example/archive)"
        )
    if values["store.backend"] == "s3":
        _check_s3(values, sources)
    return Settings(
        values=values, sources=sources, peers=peers, config_file=path, routes=routes,
        retention=retention,
    )  # fmt: skip


def _check_s3(values: dict[str, Any], sources: dict[str, str]) -> None:
    """``store.backend = s3``: what it cannot work without, one line each."""
    where = sources["store.backend"]
    if not values["store.endpoint"]:
        raise ConfigError(f"{where}: store.backend = s3 needs store.endpoint "
                          "(an http:// or https:// URL of the S3 service)")  # fmt: skip
    if not values["store.bucket"]:
        raise ConfigError(f"{where}: store.backend = s3 needs store.bucket")
    if values["index.backend"] != "postgres":
        raise ConfigError(
            f"{where}: store.backend = s3 needs index.backend = postgres (the nodes sharing "
            "the bucket find each other's packs through the shared index)"
        )


# Values that may carry a credential: an invalid one is not echoed.
_HIDDEN_WHEN_INVALID = frozenset({"index.dsn", "store.endpoint"})


def _validate(option: Option, raw: Any, source: str) -> Any:
    try:
        return option.parse(raw)
    except ValueError as e:
        shown = "<hidden>" if option.key in _HIDDEN_WHEN_INVALID else repr(raw)
        raise ConfigError(f"{source}: {option.key} = {shown} is invalid: expected {e}") from None


def _find_config_file(
    explicit: str | os.PathLike[str] | None,
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    cwd: Path,
) -> Path | None:
    named = explicit if explicit is not None else env.get("DUCKPACS_CONFIG")
    if named:
        path = (cwd / Path(named).expanduser()).resolve()
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist")
        return path
    local = cwd / CONFIG_FILENAME
    if local.is_file():
        return local.resolve()
    data = flags.get("archive.data_dir") or env.get("DUCKPACS_DATA_DIR") or DEFAULT_DATA_DIR
    in_data = cwd / Path(str(data)).expanduser() / CONFIG_FILENAME
    return in_data.resolve() if in_data.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None


def _flatten(document: dict[str, Any], path: Path | None) -> tuple[dict[str, Any], dict[str, Peer]]:
    """Turn the TOML tables into ``{"section.key": value}`` and a dict of peers."""
    values: dict[str, Any] = {}
    peers: dict[str, Peer] = {}
    sections = {key.split(".")[0] for key in OPTIONS_BY_KEY}
    for section, table in document.items():
        if section == "peers":
            peers = _parse_peers(table, path)
            continue
        if section in ("route", "retention"):
            continue  # arrays of tables, read by load() once the peers are known
        if section not in sections:
            allowed = ", ".join(sorted(sections | {"peers", "[route]", "[retention]"}))
            raise ConfigError(f"{path}: unknown section [{section}]; allowed: {allowed}")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section} must be a table ([{section}])")
        for key, value in table.items():
            full = f"{section}.{key}"
            if full in RETIRED:
                log.warning("%s: %s is no longer used (%s); remove it", path, full, RETIRED[full])
                continue
            if full not in OPTIONS_BY_KEY:
                allowed = ", ".join(k for k in OPTIONS_BY_KEY if k.startswith(section + "."))
                raise ConfigError(f"{path}: unknown key {full}; allowed: {allowed}")
            values[full] = value
    return values, peers


def _parse_peers(table: Any, path: Path | None) -> dict[str, Peer]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: peers must be tables such as [peers.ct1]")
    peers = {}
    for name, spec in table.items():
        where = f"{path}: peers.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a table with ae_title, host, port, permissions")
        unknown = set(spec) - PEER_KEYS
        if unknown:
            allowed = ", ".join(sorted(PEER_KEYS))
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]}; allowed: {allowed}")
        missing = {"ae_title", "host", "port"} - set(spec)
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(sorted(missing))}")
        fields: dict[str, Any] = {}
        for key, parse in (("ae_title", _ae_title), ("port", _port), ("permissions", _permissions)):
            raw = spec.get(key, list(PERMISSIONS) if key == "permissions" else None)
            try:
                fields[key] = parse(raw)
            except ValueError as e:
                raise ConfigError(f"{where}.{key} = {raw!r} is invalid: expected {e}") from None
        fields.update(_peer_tls(where, spec))
        host = spec["host"]
        if not isinstance(host, str) or not host.strip():
            raise ConfigError(
                f"{where}.host = {host!r} is invalid: expected a host name or address"
            )
        peers[name] = Peer(name=name, host=host.strip(), **fields)
    titles = [p.ae_title for p in peers.values()]
    duplicate = next((t for t in titles if titles.count(t) > 1), None)
    if duplicate:
        raise ConfigError(f"{path}: AE title {duplicate!r} is used by more than one peer")
    return peers


def _peer_tls(where: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A peer's TLS keys: ``tls`` (bool), ``tls_name``, ``tls_fingerprint`` (SHA-256 of its
    certificate, hex with or without colons)."""
    fields: dict[str, Any] = {}
    if "tls" in spec:
        try:
            fields["tls"] = _boolean(spec["tls"])
        except ValueError as e:
            raise ConfigError(f"{where}.tls = {spec['tls']!r} is invalid: expected {e}") from None
    name = spec.get("tls_name", "")
    if not isinstance(name, str):
        raise ConfigError(f"{where}.tls_name = {name!r} is invalid: expected a Common Name")
    fields["tls_name"] = name.strip()
    raw = spec.get("tls_fingerprint", "")
    fingerprint = raw.replace(":", "").strip().lower() if isinstance(raw, str) else None
    if fingerprint is None or (
        fingerprint
        and (len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint))
    ):
        raise ConfigError(
            f"{where}.tls_fingerprint = {raw!r} is invalid: expected a SHA-256 fingerprint "
            "(64 hex digits, colons allowed)"
        )
    fields["tls_fingerprint"] = fingerprint
    return fields


def _entries(document: dict[str, Any], kind: str, path: Path | None) -> list[dict[str, Any]]:
    """The tables of ``[[kind]]`` (an array of tables in TOML)."""
    tables = document.get(kind, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: {kind} must be written as [[{kind}]] tables")
    return tables


def _unique_names(kind: str, names: list[str], path: Path | None) -> None:
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise ConfigError(f"{path}: more than one [[{kind}]] is named {duplicate!r}")


def _entry_name(kind: str, index: int, spec: dict[str, Any], path: Path | None) -> str:
    name = spec.get("name", f"{kind}{index + 1}")
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise ConfigError(f"{path}: [[{kind}]] #{index + 1}: name = {name!r} is invalid: "
                          "expected a text of 1 to 64 characters")  # fmt: skip
    return name.strip()


def _check_keys(where: str, spec: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {sorted(unknown)[0]}; allowed: {', '.join(sorted(allowed))}"
        )


def _match(where: str, raw: Any, *, calling_ae: bool) -> dict[str, Any]:
    """A ``match`` table: DICOM keyword (or ggggeeee) -> a query value or a list of them."""
    from pydicom.datadict import tag_for_keyword

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f'{where}.match must be a table such as {{ Modality = "CT" }}')
    match: dict[str, Any] = {}
    for key, value in raw.items():
        known = tag_for_keyword(key) is not None or (len(key) == 8 and _is_hex(key))
        if not known and not (calling_ae and key == CALLING_AE):
            extra = f" or {CALLING_AE}" if calling_ae else ""
            raise ConfigError(f"{where}.match: unknown attribute {key!r}; "
                              f"expected a DICOM keyword such as Modality{extra}")  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, str | int | float | list):
            raise ConfigError(f"{where}.match.{key} = {value!r} is invalid: expected a text "
                              "(wildcards * ?, ranges A-B) or a list of texts")  # fmt: skip
        if isinstance(value, list):
            if not value or not all(isinstance(v, str | int | float) for v in value):
                raise ConfigError(f"{where}.match.{key} = {value!r} is invalid: "
                                  "expected a non-empty list of texts")  # fmt: skip
            match[key] = [str(v) for v in value]
        else:
            match[key] = str(value)
    return match


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _parse_route(
    index: int, spec: dict[str, Any], peers: dict[str, Peer], path: Path | None
) -> Route:
    name = _entry_name("route", index, spec, path)
    where = f"{path}: route {name!r}"
    _check_keys(where, spec, ROUTE_KEYS)
    to = spec.get("to")
    targets = [to] if isinstance(to, str) else to
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise ConfigError(f'{where}: to = {to!r} is invalid: expected a peer name or a list '
                          'of them, e.g. to = ["pacs"]')  # fmt: skip
    known = ", ".join(sorted(peers)) or "none configured"
    names = []
    for target in targets:
        peer = peers.get(target) or next((p for p in peers.values() if p.ae_title == target), None)
        if peer is None:
            raise ConfigError(f"{where}: to = {target!r} is not a peer under [peers] ({known})")
        names.append(peer.name)
    trigger = spec.get("trigger", "instance")
    if trigger not in TRIGGERS:
        raise ConfigError(f"{where}: trigger = {trigger!r} is invalid: expected "
                          f"{' or '.join(TRIGGERS)}")  # fmt: skip
    if "stable_seconds" in spec and trigger != "stable-study":
        raise ConfigError(f'{where}: stable_seconds applies only to trigger = "stable-study"')
    try:
        stable = _timeout(spec.get("stable_seconds", 60))
    except ValueError as e:
        raise ConfigError(f"{where}: stable_seconds = {spec['stable_seconds']!r} is invalid: "
                          f"expected {e}") from None  # fmt: skip
    match = _match(where, spec.get("match"), calling_ae=True)
    return Route(name, match, tuple(dict.fromkeys(names)), trigger, stable)


def _parse_retention(index: int, spec: dict[str, Any], path: Path | None) -> Retention:
    name = _entry_name("retention", index, spec, path)
    where = f"{path}: retention {name!r}"
    _check_keys(where, spec, RETENTION_KEYS)
    if "keep_days" not in spec:
        raise ConfigError(f"{where}: missing keep_days (how many days a study is kept)")
    days = spec["keep_days"]
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 100 * 366:
        raise ConfigError(f"{where}: keep_days = {days!r} is invalid: expected a number of "
                          "days from 1 to 36600")  # fmt: skip
    return Retention(name, _match(where, spec.get("match"), calling_ae=False), days)


DEFAULT_FILE = """\
# duckpacs configuration. Every setting can also be given as an environment variable
# (shown beside it) or as a command-line flag; flags win over variables, variables over
# this file. `duckpacs config show` prints the effective values and where each came from.

[archive]
# Folder holding the store, the index and the logs ($DUCKPACS_DATA_DIR).
# A relative path is relative to this file.
# data_dir = "."
# DEBUG, INFO, WARNING or ERROR ($DUCKPACS_LOG_LEVEL).
log_level = "INFO"
# Storage limits (0 = none): the bytes the archive's instances take in the store
# ($DUCKPACS_MAX_BYTES) and the free space to keep on the disk ($DUCKPACS_MIN_FREE_BYTES),
# e.g. "500 GB". At a limit, on_limit = "refuse" answers new instances with 0xA700 (C-STORE)
# or 507 (STOW-RS); "recycle" removes the oldest unprotected studies (`duckpacs protect`).
# max_bytes = "500 GB"
# min_free_bytes = "20 GB"
# on_limit = "refuse"

[dimse]
# Our AE title; peers must call us by it ($DUCKPACS_AE_TITLE).
ae_title = "DUCKPACS"
port = 11112          # $DUCKPACS_DIMSE_PORT
bind = "0.0.0.0"      # $DUCKPACS_DIMSE_BIND
# What a calling AE title that is not listed under [peers] may do: any of
# echo, store, find, move, get ($DUCKPACS_UNKNOWN_PEER_PERMISSIONS).
unknown_peer_permissions = ["echo"]
# Accept every calling AE title with every permission. Unsafe outside a lab.
accept_any = false
# Associations served at once; more are refused for now ($DUCKPACS_MAX_ASSOCIATIONS).
max_associations = 32
# Seconds of silence before an association is aborted ($DUCKPACS_IDLE_TIMEOUT).
idle_timeout = 60
# Seconds associations may take to finish when the archive stops ($DUCKPACS_SHUTDOWN_GRACE).
shutdown_grace = 10
# DICOM TLS (PS3.15 B.9) on a port of its own beside the plain one (0: off). tls_cert and
# tls_key are ours; with tls_ca, callers must show a certificate issued by it, and peers
# marked tls = true are dialed over TLS and checked against it.
# tls_port = 2762
# tls_cert = "/etc/duckpacs/dicom-cert.pem"
# tls_key = "/etc/duckpacs/dicom-key.pem"
# tls_ca = "/etc/duckpacs/dicom-ca.pem"

[http]
port = 8042           # $DUCKPACS_HTTP_PORT
bind = "127.0.0.1"    # $DUCKPACS_HTTP_BIND
# Who may search and view without logging in: "loopback" (this machine only), "any"
# or "off" ($DUCKPACS_HTTP_ANONYMOUS). Users are managed in users.json in the data folder.
anonymous = "loopback"
# Browser origins allowed to call DICOMweb (CORS), e.g. ["https://ohif.example.org"].
cors_origins = []
# HTTPS: a PEM certificate and its key ($DUCKPACS_HTTP_TLS_CERT, $DUCKPACS_HTTP_TLS_KEY).
# tls_cert = "/etc/duckpacs/cert.pem"
# tls_key = "/etc/duckpacs/key.pem"

# Known DICOM nodes. The name is ours; ae_title/host/port are theirs. permissions lists
# what the peer may ask of us (default: all of echo, store, find, move, get), and host/port
# is where we send C-MOVE results and `duckpacs send`.
#
# [peers.ct_scanner]
# ae_title = "CT1"
# host = "192.168.1.20"
# port = 104
# permissions = ["echo", "store"]
#
# [peers.remote_site]     # over DICOM TLS both ways
# ae_title = "SITE_B"
# host = "pacs.site-b.example.org"
# port = 2762
# tls = true
# tls_name = "pacs.site-b.example.org"   # Common Name its certificate must carry
#
# [peers.viewer]
# ae_title = "WORKSTATION"
# host = "192.168.1.30"
# port = 11112
# permissions = ["echo", "find", "move", "get"]

# The index: an embedded DuckDB file in the data folder (default), or PostgreSQL, shared by
# several nodes (`pip install 'duckpacs[postgres]'`). The password is never written here:
# it comes from $PGPASSWORD (or the variable password_env names) or password_file.
#
# [index]
# backend = "postgres"
# dsn = "postgresql://duckpacs@db.example.org:5432/duckpacs"
# password_file = "/etc/duckpacs/pgpass"
# node = "front-1"   # this node's id (default: hostname and a hash of the data folder)
# timeout = 10       # seconds a statement may take before C-STORE/C-FIND fail

# Packs on S3-compatible object storage (needs the PostgreSQL index): each node writes its
# packs in its data folder as always, seals them every seal_seconds and uploads them under
# <prefix>/<index.node>/ in the bucket. Credentials are never written here: they come from
# $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY (or the variables access_key_env and
# secret_key_env name), or from credentials_file, a file of two lines:
#   access_key = AKIA...
#   secret_key = ...
#
# [store]
# backend = "s3"
# endpoint = "https://s3.eu-west-1.amazonaws.com"
# bucket = "clinic-archive"
# prefix = "duckpacs"
# region = "eu-west-1"
# credentials_file = "/etc/duckpacs/s3-credentials"
# cache_bytes = "256 MiB"        # ranges read from S3 kept in this node's cache
# seal_seconds = 2
# max_pending_bytes = "1 GiB"    # arrivals are refused while more waits for upload
# timeout = 10                   # seconds an S3 request may take

# Forwarding: a queue in the data folder survives restarts; a destination that does not
# answer is retried after retry_initial seconds, doubling up to retry_max; an instance a
# destination refuses max_attempts times is marked failed (`duckpacs queue`). Each
# destination gets up to `associations` associations at once.
[routing]
retry_initial = 10
retry_max = 600
max_attempts = 10
associations = 2

# Routes: which instances go to which peers. match keys are DICOM keywords matched like
# C-FIND (wildcards * ?, ranges A-B, lists) plus CallingAE (who sent it); trigger is
# "instance" (each as it arrives) or "stable-study" (the whole study once no instance of
# it has arrived for stable_seconds).
#
# [[route]]
# name = "ct-to-telerad"
# match = { Modality = "CT", CallingAE = "CT*" }
# to = ["telerad"]
#
# [[route]]
# name = "all-to-central"
# to = ["central"]
# trigger = "stable-study"
# stable_seconds = 300

# Retention: studies matching match (study-level keys) are removed keep_days after their
# Study Date, unless protected (`duckpacs protect STUDY`). Every removal is audit-logged.
#
# [[retention]]
# name = "cr-10-years"
# match = { ModalitiesInStudy = "CR" }
# keep_days = 3653
"""
