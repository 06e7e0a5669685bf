"""Who may do what: calling AE titles mapped to permissions (echo, store, find, move, get).

Configured peers get the permissions listed for them; any other calling AE title gets
``dimse.unknown_peer_permissions`` (default: echo only, like a real archive lets anyone
verify connectivity); ``dimse.accept_any`` grants everything to everyone.
"""

from __future__ import annotations

from dataclasses import dataclass

from duckpacs.config import PERMISSIONS, Settings


@dataclass(frozen=True)
class AccessPolicy:
    peers: dict[str, frozenset[str]]  # AE title -> permissions
    unknown: frozenset[str]
    accept_any: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        return cls(
            peers={p.ae_title: p.permissions for p in settings.peers.values()},
            unknown=frozenset(settings["dimse.unknown_peer_permissions"]),
            accept_any=bool(settings["dimse.accept_any"]),
        )

    def permissions(self, calling_ae: str) -> frozenset[str]:
        if self.accept_any:
            return frozenset(PERMISSIONS)
        return self.peers.get(calling_ae.strip(), self.unknown)

    def allows(self, calling_ae: str, permission: str) -> bool:
        return permission in self.permissions(calling_ae)

    def may_associate(self, calling_ae: str) -> bool:
        """False when the caller may do nothing at all: reject the association outright."""
        return bool(self.permissions(calling_ae))
