"""Naming a remote DICOM node on the command line: a configured peer or ``AE@host:port``."""

from __future__ import annotations

from duckpacs.config import PERMISSIONS, Peer, Settings
from duckpacs.errors import ConfigError


def resolve_peer(settings: Settings, name: str) -> Peer:
    """A peer by its name under ``[peers]``, by its AE title, or written ``AE@host:port``."""
    if name in settings.peers:
        return settings.peers[name]
    by_title = settings.peer_by_ae_title(name)
    if by_title is not None:
        return by_title
    title, at, address = name.partition("@")
    host, colon, port = address.rpartition(":")
    if at and colon and title and host and port.isdigit() and 0 < int(port) < 65536:
        return Peer(
            name=name, ae_title=title, host=host, port=int(port), permissions=frozenset(PERMISSIONS)
        )
    known = ", ".join(sorted(settings.peers)) or "none configured"
    raise ConfigError(f"unknown peer {name!r}: give a configured peer ({known}) or AE@host:port")
