"""Shared helpers for subcommands: loading settings from parsed arguments, printing JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from duckpacs import config
from duckpacs.errors import QueryError

# Command-line flags that override configuration keys: flag attribute -> option key.
FLAG_KEYS = {
    "data": "archive.data_dir",
    "log_level": "archive.log_level",
    "ae_title": "dimse.ae_title",
    "port": "dimse.port",
    "bind": "dimse.bind",
    "http_port": "http.port",
    "http_bind": "http.bind",
}


def settings(args: argparse.Namespace) -> config.Settings:
    """The effective settings for this invocation (flags > env > file > defaults)."""
    flags = {key: getattr(args, attr, None) for attr, key in FLAG_KEYS.items()}
    loaded = config.load(config_path=getattr(args, "config", None), flags=flags)
    # The index every command of this process opens; with the default (embedded) index
    # nothing is imported here, so light commands start as fast as before.
    if loaded["index.backend"] != "duckdb" or "duckpacs.index.backend" in sys.modules:
        from duckpacs.index import backend

        backend.configure(loaded)
    # Likewise the store: with the default (local) store nothing more is done here.
    if loaded["store.backend"] != "local" or "duckpacs.store_config" in sys.modules:
        from duckpacs import store_config

        store_config.configure(loaded)
    return loaded


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def parse_keys(items: list[str]) -> dict[str, str]:
    """``TAG=VALUE`` arguments as a query mapping (``TAG=`` asks for the key as return key)."""
    query: dict[str, str] = {}
    for item in items:
        tag, sep, value = item.partition("=")
        if not sep or not tag.strip():
            raise QueryError(f"expected TAG=VALUE (e.g. PatientID=123), got {item!r}")
        query[tag.strip()] = value
    return query
