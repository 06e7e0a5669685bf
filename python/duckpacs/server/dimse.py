"""The DIMSE listener (PS3.7, PS3.8), built on pynetdicom.

Services: Verification (C-ECHO, PS3.4 Annex A); Storage of every SOP class, including
private and unknown ones, in whatever transfer syntax is offered (C-STORE, PS3.4 Annex B);
Patient Root and Study Root Query/Retrieve at every level (C-FIND, C-MOVE, C-GET with
C-CANCEL, PS3.4 Annex C); Storage Commitment Push Model (N-ACTION, N-EVENT-REPORT, PS3.4
Annex J).

Association requests are checked against the access policy: a wrong called AE title is
rejected with reason 7 ("called AE title not recognised", PS3.8 9.3.4), a caller with no
permission at all (or calling from the wrong host) with reason 3 ("calling AE title not
recognised"); too many associations get reason 2 transient ("local limit exceeded").
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from duckpacs import logs
from duckpacs.archive.facade import Archive
from duckpacs.archive.types import Outcome
from duckpacs.config import Settings
from duckpacs.errors import DuckpacsError
from duckpacs.server import commitment, retrieve
from duckpacs.server.access import AccessPolicy
from duckpacs.server.query import IdentifierError, parse_identifier, response_identifier

log = logs.get("dimse")

# PS3.7 C.5.x general status "Refused: Not Authorized".
STATUS_NOT_AUTHORIZED = 0x0124
STATUS_SUCCESS = 0x0000
STATUS_PENDING = 0xFF00
STATUS_CANCEL = 0xFE00
# PS3.4 C.4.1.1.4 / C.4.2.1.5: identifier does not match SOP class; unable to process.
STATUS_IDENTIFIER_MISMATCH = 0xA900
STATUS_UNABLE_TO_PROCESS = 0xC001
STATUS_MOVE_DESTINATION_UNKNOWN = 0xA801
STATUS_OUT_OF_RESOURCES_MATCHES = 0xA701

# A-ASSOCIATE-RJ diagnostics, service-user source (PS3.8 9.3.4).
REJECT_REASONS = {
    1: "no reason given",
    2: "application context name not supported",
    3: "calling AE title not recognised",
    7: "called AE title not recognised",
}

QR_CONTEXTS = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)


def _calling_ae(event: Any) -> str:
    """The caller's AE title; at EVT_REQUESTED only the A-ASSOCIATE-RQ primitive has it."""
    requestor = event.assoc.requestor
    title = requestor.ae_title or getattr(requestor.primitive, "calling_ae_title", "") or ""
    return str(title).strip()


def _peer(event: Any) -> dict[str, Any]:
    requestor = event.assoc.requestor
    return {"peer": _calling_ae(event), "addr": f"{requestor.address}:{requestor.port}"}


class NoDelayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with Nagle's algorithm off on accepted sockets."""

    def get_request(self) -> tuple[Any, Any]:
        """Accept, and turn Nagle's algorithm off: a C-STORE request spans several PDUs
        written one by one, and each would otherwise wait for the peer's delayed ACK."""
        sock, address = super().get_request()
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address


class DimseServer:
    """Owns the pynetdicom application entity and its listening socket.

    Parameters
    ----------
    settings : Settings
        The effective configuration (AE title, peers, limits).
    archive : Archive
        Where instances are stored and found.
    """

    def __init__(self, settings: Settings, archive: Archive) -> None:
        self.settings = settings
        self.archive = archive
        self.policy = AccessPolicy.from_settings(settings)
        retrieve.install()
        # Storage of any SOP class, known or private, in any offered transfer syntax.
        _config.UNRESTRICTED_STORAGE_SERVICE = True
        ae = AE(ae_title=settings.ae_title)
        ae.add_supported_context(Verification)
        for sop_class in QR_CONTEXTS:
            ae.add_supported_context(sop_class)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        ae.require_called_aet = True  # PS3.8 9.3.4: reject other called AE titles
        ae.maximum_pdu_size = settings["dimse.max_pdu"]
        ae.maximum_associations = max(1, settings["dimse.max_associations"])
        idle = settings["dimse.idle_timeout"]
        ae.network_timeout = idle
        ae.acse_timeout = min(idle, 30)
        ae.dimse_timeout = idle
        self.ae = ae
        self.commitment = commitment.Committer(self)
        self._server: Any = None

    def start(self, address: tuple[str, int] | None = None) -> tuple[str, int]:
        if address is None:
            address = (self.settings["dimse.bind"], self.settings["dimse.port"])
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_GET, self._on_get),
            (evt.EVT_C_MOVE, self._on_move),
            (evt.EVT_N_ACTION, self.commitment.on_action),
        ]
        server = self.ae.make_server(address, evt_handlers=handlers, server_class=NoDelayServer)
        self._server = server
        self.ae._servers.append(server)  # so that server.shutdown() can deregister it
        threading.Thread(target=server.serve_forever, name="dimse-accept", daemon=True).start()
        host, port = server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()  # also closes the socket
            self._server = None
        self.commitment.stop()

    # --- association life cycle -------------------------------------------------------

    def _on_requested(self, event: Any) -> None:
        requestor = event.assoc.requestor
        calling = _calling_ae(event)
        reason = 0
        if not self.policy.may_associate(calling):
            reason = 3
        elif self.settings["dimse.check_peer_host"] and not self.policy.accept_any:
            peer = self.settings.peer_by_ae_title(calling)
            if peer is not None and not _same_host(peer.host, requestor.address):
                reason = 3
        if not reason:
            self._limit_contexts(event.assoc, self.policy.permissions(calling))
            return
        if reason:
            # PS3.8 9.3.4: rejected-permanent, service-user, calling AE title not recognised.
            assoc = event.assoc
            assoc.acse.send_reject(0x01, 0x01, reason)
            assoc.is_rejected = True  # tells pynetdicom not to negotiate further
            logs.event(log, "association rejected", reason=REJECT_REASONS[reason], **_peer(event))
            assoc.kill()

    @staticmethod
    def _limit_contexts(assoc: Any, permissions: frozenset[str]) -> None:
        """Reject the C-GET and C-MOVE presentation contexts of a caller without that
        permission ("abstract syntax not supported", PS3.8 9.3.3.2): pynetdicom's retrieve
        SCPs cannot answer them with 0x0124. Echo, find and store stay negotiable and are
        refused per request with 0x0124 (PS3.7 C.5)."""
        needed = {
            PatientRootQueryRetrieveInformationModelGet: "get",
            StudyRootQueryRetrieveInformationModelGet: "get",
            PatientRootQueryRetrieveInformationModelMove: "move",
            StudyRootQueryRetrieveInformationModelMove: "move",
        }
        contexts = assoc.acceptor.supported_contexts
        kept = [cx for cx in contexts if needed.get(cx.abstract_syntax, "") in permissions | {""}]
        if len(kept) != len(contexts):
            assoc.acceptor.supported_contexts = kept

    def _on_established(self, event: Any) -> None:
        logs.event(log, "association accepted", **_peer(event))

    def _on_rejected(self, event: Any) -> None:
        primitive = event.assoc.acceptor.primitive
        diagnostic = getattr(primitive, "diagnostic", None)
        source = getattr(primitive, "source", None)
        if source == 3 and diagnostic == 2:  # provider (presentation), local limit exceeded
            reason = "too many associations"
        else:
            reason = REJECT_REASONS.get(diagnostic or 0, f"diagnostic {diagnostic}")
        logs.event(log, "association rejected", reason=reason, **_peer(event))

    def _on_released(self, event: Any) -> None:
        logs.event(log, "association released", **_peer(event))

    def _on_aborted(self, event: Any) -> None:
        logs.event(log, "association aborted", **_peer(event))

    def allowed(self, event: Any, permission: str, service: str) -> bool:
        if self.policy.allows(_calling_ae(event), permission):
            return True
        logs.event(log, f"{service} refused", reason="not authorized", **_peer(event))
        return False

    # --- services ---------------------------------------------------------------------

    def _on_echo(self, event: Any) -> int:
        if not self.allowed(event, "echo", "C-ECHO"):
            return STATUS_NOT_AUTHORIZED
        logs.event(log, "C-ECHO", status="success", **_peer(event))
        return STATUS_SUCCESS

    def _on_store(self, event: Any) -> int:
        """C-STORE (PS3.4 B.2.3): raw bytes to the archive; pydicom never decodes them."""
        if not self.allowed(event, "store", "C-STORE"):
            return STATUS_NOT_AUTHORIZED
        request = event.request
        try:
            result = self.archive.store(
                request.DataSet.getvalue(),
                str(event.context.transfer_syntax),
                calling_ae=event.assoc.requestor.ae_title,
                sop_class_uid=str(request.AffectedSOPClassUID),
                sop_instance_uid=str(request.AffectedSOPInstanceUID),
            )
        except DuckpacsError as e:  # the index owner is gone, for one: out of resources
            logs.event(log, "C-STORE failed", uid=request.AffectedSOPInstanceUID, reason=e)
            return 0xA700
        if result.outcome is not Outcome.STORED:
            level = 30 if result.outcome is not Outcome.DUPLICATE_IDENTICAL else 10
            logs.event(
                log,
                "C-STORE " + result.outcome.value,
                level=level,
                uid=result.sop_instance_uid,
                status=f"0x{result.status:04X}",
                reason=result.reason,
                **_peer(event),
            )
        return result.status

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        """C-FIND (PS3.4 C.4.1): one pending response per match, honouring C-CANCEL."""
        if not self.allowed(event, "find", "C-FIND"):
            yield STATUS_NOT_AUTHORIZED, None
            return
        identifier = event.identifier
        try:
            level, query, return_keys = parse_identifier(
                identifier, str(event.request.AffectedSOPClassUID)
            )
            rows = self.archive.find(level, query, return_keys)
        except IdentifierError as e:
            logs.event(log, "C-FIND refused", reason=e, **_peer(event))
            yield STATUS_IDENTIFIER_MISMATCH, None
            return
        except DuckpacsError as e:
            logs.event(log, "C-FIND failed", reason=e, **_peer(event))
            yield STATUS_UNABLE_TO_PROCESS, None
            return
        charset = identifier.get("SpecificCharacterSet")
        logs.event(log, "C-FIND", qr_level=level, matches=len(rows), **_peer(event))
        with retrieve.fast_polling(event.assoc):
            for row in rows:
                if event.is_cancelled:
                    yield STATUS_CANCEL, None
                    return
                yield STATUS_PENDING, response_identifier(level, row, return_keys, charset)

    def _locate(self, event: Any, service: str) -> tuple[int, list[Any]]:
        try:
            level, query, _keys = parse_identifier(
                event.identifier, str(event.request.AffectedSOPClassUID)
            )
            refs = self.archive.locate(level, query)
        except IdentifierError as e:
            logs.event(log, f"{service} refused", reason=e, **_peer(event))
            return STATUS_IDENTIFIER_MISMATCH, []
        except DuckpacsError as e:
            logs.event(log, f"{service} failed", reason=e, **_peer(event))
            return STATUS_UNABLE_TO_PROCESS, []
        if len(refs) > 65535:  # sub-operation counts are US (PS3.7 C.4.2.1.6)
            return STATUS_OUT_OF_RESOURCES_MATCHES, []
        logs.event(log, service, qr_level=level, instances=len(refs), **_peer(event))
        return STATUS_SUCCESS, refs

    def _sub_operations(self, event: Any, refs: list[Any]) -> Iterator[tuple[int, Any]]:
        with retrieve.fast_polling(event.assoc):
            for ref in refs:
                if event.is_cancelled:
                    yield STATUS_CANCEL, None
                    return
                yield STATUS_PENDING, retrieve.RawInstance(self.archive, ref)

    def _on_get(self, event: Any) -> Iterator[Any]:
        """C-GET (PS3.4 C.4.3): C-STORE sub-operations on this association."""
        if not self.allowed(event, "get", "C-GET"):
            yield STATUS_NOT_AUTHORIZED, None
            return
        status, refs = self._locate(event, "C-GET")
        if status != STATUS_SUCCESS:
            yield status, None
            return
        yield len(refs)
        yield from self._sub_operations(event, refs)

    def _on_move(self, event: Any) -> Iterator[Any]:
        """C-MOVE (PS3.4 C.4.2): C-STORE sub-operations to a configured peer."""
        destination = str(event.move_destination).strip()
        if not self.allowed(event, "move", "C-MOVE"):
            yield None, None
            return
        peer = self.settings.peer_by_ae_title(destination)
        if peer is None:
            logs.event(log, "C-MOVE refused", reason=f"unknown destination {destination}")
            yield None, None  # pynetdicom answers 0xA801 (move destination unknown)
            return
        status, refs = self._locate(event, "C-MOVE")
        if status != STATUS_SUCCESS:
            # pynetdicom wants the destination before any status; failing here makes it
            # answer 0xC514 (failed, unable to process: PS3.4 C.4.2.1.5).
            raise DimseRefusal(f"C-MOVE cannot be processed (0x{status:04X})")
        yield peer.host, peer.port, {"contexts": retrieve.storage_contexts(refs)}
        yield len(refs)
        yield from self._sub_operations(event, refs)


class DimseRefusal(DuckpacsError):
    """A request refused after pynetdicom's handler protocol left no better status."""


def _same_host(configured: str, address: str) -> bool:
    try:
        infos = socket.getaddrinfo(configured, None)
    except OSError:
        return configured == address
    return address in {info[4][0] for info in infos}
