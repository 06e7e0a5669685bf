"""The DICOM listener of ``duckpacs serve``: the Rust server (``_core.DimseServer``) over the
archive, and the answers only the orchestrator has (:class:`ArchiveHost`).

Rust carries the bytes: the upper layer, C-ECHO, C-STORE into the archive's write path,
C-FIND answers, C-GET/C-MOVE sub-operations, on native threads without the GIL. Python is
asked, through :class:`ArchiveHost`, once per association who may do what (the access rules
of docs/ARCHITECTURE.md, with their A-ASSOCIATE-RJ reasons), and per request what only it
knows: the index queries (DuckDB), transcoding for a peer that refuses the stored transfer
syntax, the move destinations, and the rare services (Storage Commitment, Modality Worklist
C-FIND, MPPS N-CREATE/N-SET: ``duckpacs.worklist``).

With ``dimse.tls_port`` a second Rust server takes DICOM over TLS (PS3.15 B.9) on that port,
over the same archive and the same :class:`ArchiveHost`, which then also checks that a
caller claiming a peer's AE title shows that peer's certificate (``duckpacs.net.tls``).
"""

from __future__ import annotations

import socket
from typing import Any

from duckpacs import _core, logs
from duckpacs.archive.facade import Archive
from duckpacs.config import Settings
from duckpacs.dicom import status, transcode
from duckpacs.net.access import AccessPolicy
from duckpacs.net.commitment import Commitment
from duckpacs.net.tls import DialArgs, dial_args, identity_refusal, listener_files
from duckpacs.worklist import find as worklist_find
from duckpacs.worklist.mpps import Mpps
from duckpacs.worklist.store import Worklist

log = logs.get("dimse")

# What ``rare`` answers: (status, response dataset, (event type, event information),
# pending answers, error comment, Affected SOP Instance UID of the response).
RareAnswer = tuple[int, bytes | None, tuple[int, bytes] | None, list[bytes], str | None, str | None]
C_FIND_RQ, N_SET_RQ, N_ACTION_RQ, N_CREATE_RQ = 0x0020, 0x0120, 0x0130, 0x0140

# A-ASSOCIATE-RJ reasons, service-user source (PS3.8 9.3.4).
CALLING_AE_NOT_RECOGNISED = 3
CALLED_AE_NOT_RECOGNISED = 7


def _same_host(configured: str, address: str) -> bool:
    try:
        infos = socket.getaddrinfo(configured, None)
    except OSError:
        return configured == address
    return address in {info[4][0] for info in infos}


class ArchiveHost:
    """What the Rust listener asks Python (see ``rust/duckpacs-py/src/net.rs``)."""

    def __init__(self, settings: Settings, archive: Archive) -> None:
        self.settings = settings
        self.archive = archive
        self.policy = AccessPolicy.from_settings(settings)
        self.commitment = Commitment(settings, archive)
        self.worklist = Worklist.from_settings(settings)
        self.mpps = Mpps(self.worklist, archive)

    def admit(
        self, calling: str, called: str, address: str | None, tls: dict[str, Any] | None = None
    ) -> tuple[bool, ...] | int:
        """The caller's permissions (echo, store, find, get, move), or a rejection reason.
        ``tls``: None on the plain listener, else the client certificate's ``common_name``
        and ``fingerprint``."""
        if called.strip() != self.settings.ae_title:
            return CALLED_AE_NOT_RECOGNISED
        permissions = self.policy.permissions(calling)
        if not permissions:
            return CALLING_AE_NOT_RECOGNISED
        refusal = identity_refusal(self.settings.peer_by_ae_title(calling.strip()), tls)
        if refusal is not None:
            logs.event(log, "association refused", calling=calling.strip(), reason=refusal)
            return CALLING_AE_NOT_RECOGNISED
        if self.settings["dimse.check_peer_host"] and not self.policy.accept_any:
            peer = self.settings.peer_by_ae_title(calling.strip())
            if peer is not None and address is not None and not _same_host(peer.host, address):
                return CALLING_AE_NOT_RECOGNISED
        return tuple(p in permissions for p in ("echo", "store", "find", "get", "move"))

    def find(
        self, level: str, matching: dict[str, str], return_keys: list[str]
    ) -> list[dict[str, Any]]:
        return self.archive.find(level, matching, return_keys)

    def locate(self, level: str, matching: dict[str, str]) -> list[tuple[Any, ...]]:
        return [
            (r.sop_instance_uid, r.sop_class_uid, r.transfer_syntax, *r.location)
            for r in self.archive.locate(level, matching)
        ]

    def transcode(self, stream: bytes, transfer_syntax: str) -> bytes:
        return transcode.dataset_in(stream, transfer_syntax)

    def destination(self, ae_title: str) -> tuple[str, int, DialArgs | None] | None:
        """A C-MOVE destination's address, and the TLS to dial it with if it wants TLS."""
        peer = self.settings.peer_by_ae_title(ae_title.strip())
        if peer is None:
            return None
        return (peer.host, peer.port, dial_args(self.settings, peer))

    def rare(
        self, peer: dict[str, Any], command: dict[str, Any], data: bytes, transfer_syntax: str
    ) -> RareAnswer:
        field = command.get("field")
        if field == N_ACTION_RQ:
            code, dataset, report = self.commitment.handle(peer, command, data, transfer_syntax)
            return code, dataset, report, [], None, None
        if field == C_FIND_RQ:  # the listener sends only worklist queries here
            code, answers, comment = worklist_find.handle(
                self.worklist, peer, data, transfer_syntax, self.archive.find
            )
            return code, None, None, answers, comment, None
        if field in (N_CREATE_RQ, N_SET_RQ):
            code, comment, uid = self.mpps.handle(peer, command, data, transfer_syntax)
            return code, None, None, [], comment, uid
        return status.UNRECOGNIZED_OPERATION, None, None, [], None, None

    def report_elsewhere(
        self, peer: dict[str, Any], command: dict[str, Any], event_type: int, _info: bytes
    ) -> None:
        self.commitment.report_elsewhere(peer, command, event_type)


class DimseListener:
    """The Rust DICOM server over ``archive``, configured from ``settings``."""

    def __init__(self, settings: Settings, archive: Archive) -> None:
        self.settings = settings
        self.host = ArchiveHost(settings, archive)
        self._server: Any = None
        self._tls_server: Any = None
        self.address: tuple[str, int] | None = None
        self.tls_address: tuple[str, int] | None = None

    def _serve(self, bind: str, port: int, tls: tuple[str, str, str | None] | None) -> Any:
        s = self.settings
        idle = float(s["dimse.idle_timeout"])
        return _core.DimseServer(
            self.host.archive.writer, self.host.archive.store_backend, self.host,
            s.ae_title, bind, port,
            max_pdu=s["dimse.max_pdu"], max_associations=s["dimse.max_associations"],
            artim=min(idle, 30.0), idle=idle, tls=tls,
        )  # fmt: skip

    def start(
        self, bind: str | None = None, port: int | None = None, tls_port: int | None = None
    ) -> tuple[str, int]:
        """Start the plain listener and, when configured, the TLS one (``tls_address``).
        Bad TLS files raise :class:`ConfigError` before anything listens."""
        s = self.settings
        bind = s["dimse.bind"] if bind is None else bind
        tls = listener_files(s)
        self._server = self._serve(bind, s["dimse.port"] if port is None else port, None)
        self.address = (bind, int(self._server.port))
        if tls is not None:
            try:
                tls_server = self._serve(
                    bind, s["dimse.tls_port"] if tls_port is None else tls_port, tls
                )
            except BaseException:
                self.stop(0.0)
                raise
            self._tls_server = tls_server
            self.tls_address = (bind, int(tls_server.port))
        return self.address

    def load(self) -> tuple[int, int]:
        """(connections negotiating, associations established) right now, both listeners."""
        loads = [srv.load() for srv in (self._server, self._tls_server) if srv is not None]
        return (sum(p for p, _ in loads), sum(e for _, e in loads))

    def stop(self, grace: float = 10.0) -> None:
        for name in ("_tls_server", "_server"):
            server = getattr(self, name)
            if server is not None:
                server.stop(grace)
                setattr(self, name, None)
        self.host.commitment.stop()
