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


def _timeout(value: Any) -> int:
    allowed = "a number of seconds from 1 to 86400"
    number = _integer(value, allowed)
    if not 1 <= number <= 86400:
        raise ValueError(allowed)
    return number


def _on_conflict(value: Any) -> str:
    if isinstance(value, str) and value.lower() in ("keep-first", "replace"):
        return value.lower()
    raise ValueError("keep-first or replace")


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
        "archive.on_conflict",
        "DUCKPACS_ON_CONFLICT",
        _on_conflict,
        "keep-first",
        "a known SOP Instance UID with different bytes: keep-first (warn) or replace",
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
PEER_KEYS = {"ae_title", "host", "port", "permissions"}


@dataclass(frozen=True)
class Peer:
    """A known DICOM node: who may call us, and whom we call for C-MOVE and send."""

    name: str
    ae_title: str
    host: str
    port: int
    permissions: frozenset[str]


@dataclass
class Settings:
    """The effective configuration and, per key, where its value came from."""

    values: dict[str, Any]
    sources: dict[str, str]
    peers: dict[str, Peer] = field(default_factory=dict)
    config_file: Path | None = None

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
    return Settings(values=values, sources=sources, peers=peers, config_file=path)


def _validate(option: Option, raw: Any, source: str) -> Any:
    try:
        return option.parse(raw)
    except ValueError as e:
        raise ConfigError(f"{source}: {option.key} = {raw!r} is invalid: expected {e}") from None


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
        if section not in sections:
            allowed = ", ".join(sorted(sections | {"peers"}))
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
# [peers.viewer]
# ae_title = "WORKSTATION"
# host = "192.168.1.30"
# port = 11112
# permissions = ["echo", "find", "move", "get"]
"""
