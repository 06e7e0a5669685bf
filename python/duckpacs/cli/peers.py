"""Naming a remote DICOM node on the command line: a configured peer or ``AE@host:port``."""

from __future__ import annotations

from duckpacs.config import Peer, Settings


def resolve_peer(settings: Settings, name: str) -> Peer:
    """A peer by its name under ``[peers]``, by its AE title, or written ``AE@host:port``."""
    return settings.peer(name)
