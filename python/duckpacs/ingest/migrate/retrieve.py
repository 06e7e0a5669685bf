"""Fetching a study from the peer: C-GET, or C-MOVE to ourselves when C-GET does not do.

**C-GET** (PS3.4 C.4.3, Study Root): the C-STORE sub-operations come back on our own
association. Each (SOP class, transfer syntax) pair gets its own presentation context, so
the peer can send every file in the syntax it stored it in instead of transcoding (an SCP
accepts one syntax per context, PS3.8 9.3.3.2); the SCP/SCU role selection (PS3.7 D.3.3.4)
makes us the Storage SCP for those classes.

**C-MOVE** (PS3.4 C.4.2): some peers refuse C-GET altogether (Orthanc aborts the association
when a modality may not C-GET), others refuse some SOP classes. Then the peer is asked to
move the study, or the series still lacking, to our own AE title; it must know that title
as a move destination (host and port of this machine). :class:`MoveListener` is the Storage
SCP that receives them, on the configured DIMSE port, while the migration owns the archive
(``duckpacs serve`` is not running then). It stores only instances of studies being moved
at that moment, each through the receiver of its study, exactly as C-GET results.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelMove,
)
from pynetdicom.transport import ThreadedAssociationServer

from duckpacs import _core
from duckpacs.errors import DuckpacsError, NetworkError, StorageError
from duckpacs.ingest.migrate.peer import PENDING, RemotePeer, no_delay
from duckpacs.ingest.migrate.targets import Receiver

# Storage SOP classes offered for C-GET sub-operations: 128 presentation contexts at most
# (PS3.8 9.3.2.2, odd IDs 1-255), one of which is the C-GET context itself.
MAX_STORAGE_CONTEXTS = 127
# Transfer syntaxes we accept for the C-STORE sub-operations, in order of preference.
# Native, deflate, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE (PS3.5 Annex A).
PREFERRED_SYNTAXES = [
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
]
SUCCESS, WARNING = 0x0000, 0xB000
# Final statuses by which a peer says it will not do C-GET for us at all: Refused: Not
# authorized (PS3.7 C.5.x) and Refused: SOP class not supported (PS3.7 C.5.x, 0x0122).
REFUSALS = (0x0124, 0x0122)
# C-STORE statuses of the move listener: Out of resources (PS3.4 Table GG.4-1), Cannot
# understand (PS3.4 B.2.3), and Refused: Not authorized for a study nobody asked for.
OUT_OF_RESOURCES, CANNOT_UNDERSTAND, NOT_AUTHORIZED = 0xA700, 0xC000, 0x0124


@dataclass
class Retrieved:
    """What one C-GET or C-MOVE brought."""

    received: int = 0
    failed: int = 0  # sub-operations the peer reported failed
    problem: str = ""  # a failure of this retrieval
    refused: str = ""  # the peer refused the service itself (C-GET: fall back to C-MOVE)
    uids: set[str] = field(default_factory=set)  # SOP Instance UIDs received


def storage_offers(sop_classes: list[str]) -> list[tuple[str, str]]:
    """(SOP class, transfer syntax) pairs, one presentation context each, within 127."""
    if not sop_classes:
        # Unknown: every storage class with the two native syntaxes (the peer may transcode).
        return [
            (str(cx.abstract_syntax), syntax)
            for cx in StoragePresentationContexts[: MAX_STORAGE_CONTEXTS // 2]
            for syntax in PREFERRED_SYNTAXES[:2]
        ]
    per_class = max(1, min(len(PREFERRED_SYNTAXES), MAX_STORAGE_CONTEXTS // len(sop_classes)))
    return [
        (c, t) for c in sop_classes[:MAX_STORAGE_CONTEXTS] for t in PREFERRED_SYNTAXES[:per_class]
    ]


def _keep(receiver: Receiver, got: Retrieved, errors: list[str], event: Any) -> int:
    """Hand one C-STORE sub-operation to ``receiver``; the status to answer with."""
    uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
    try:
        receiver(uid, event.encoded_dataset())
    except (OSError, StorageError) as e:
        errors.append(str(e))
        return OUT_OF_RESOURCES
    got.received += 1
    got.uids.add(uid)
    return SUCCESS


def get_study(
    peer: RemotePeer, study_uid: str, sop_classes: list[str], receiver: Receiver
) -> Retrieved:
    """C-GET one study into ``receiver`` (see the module), by the Rust C-GET SCU: the
    sub-operations are received on native threads, each handed to ``receiver`` as Part 10
    bytes."""
    got = Retrieved()
    errors: list[str] = []

    def keep(uid: str, data: bytes) -> int:
        try:
            receiver(uid, data)
        except (OSError, StorageError) as e:
            errors.append(str(e))
            return OUT_OF_RESOURCES
        got.uids.add(uid)
        return SUCCESS

    result = _core.get_study(
        peer.host, peer.port, peer.calling_ae, peer.ae_title, study_uid,
        storage_offers(sop_classes), keep, timeout=peer.timeout, tls=peer.tls,
    )  # fmt: skip
    got.received = len(got.uids)
    if not result["accepted"]:
        got.refused = "the peer does not accept C-GET"
        return got
    errors += result["errors"]
    code = result["status"]
    got.failed = int(result["failed"] or 0)
    if code is None:
        if got.received == 0:
            got.refused = "the peer aborted the C-GET without sending anything"
        else:
            got.problem = f"C-GET aborted after {got.received} instances: {result['ended']}"
    elif code in REFUSALS and got.received == 0:
        got.refused = f"C-GET refused with status 0x{code:04X}"
    elif code not in (SUCCESS, WARNING):
        got.problem = f"C-GET status 0x{code:04X}"
    if errors and not got.problem:
        got.problem = f"could not keep {len(errors)} instances: {errors[0]}"
    return got


def _final(got: Retrieved, code: int, status: Dataset, service: str) -> None:
    """Note a C-GET/C-MOVE response in ``got`` (pending responses carry nothing we need)."""
    if code in PENDING:
        return
    if code < 0:  # pynetdicom's empty status: the peer aborted or never answered
        if got.received == 0:
            got.refused = f"the peer aborted the {service} without sending anything"
        else:
            got.problem = f"{service} aborted after {got.received} instances"
        return
    got.failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
    if code in REFUSALS and got.received == 0:
        got.refused = f"{service} refused with status 0x{code:04X}"
    elif code not in (SUCCESS, WARNING):
        got.problem = f"{service} status 0x{code:04X}"


class _NoDelayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, answering without Nagle's delay (see :func:`no_delay`)."""

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        no_delay(sock)
        return sock, address


@dataclass
class _Route:
    receiver: Receiver
    got: Retrieved
    errors: list[str]


class MoveListener:
    """The Storage SCP receiving C-MOVE results on our AE title (see the module)."""

    def __init__(self, ae_title: str, bind: str, port: int, max_pdu: int = 262144) -> None:
        self.ae_title, self.bind, self.port, self.max_pdu = ae_title, bind, port, max_pdu
        self._routes: dict[str, _Route] = {}
        self._lock = threading.Lock()
        self._server: Any = None

    def start(self) -> None:
        """Listen; :class:`~duckpacs.errors.NetworkError` if the port is taken."""
        # Accept every storage SOP class, private ones too, in the syntax the peer offers
        # first for it (the one it stored the file in): files arrive as stored.
        _config.UNRESTRICTED_STORAGE_SERVICE = True
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        ae.maximum_pdu_size = self.max_pdu
        handlers: list[Any] = [(evt.EVT_C_STORE, self._on_store)]
        address = (self.bind, self.port)
        try:
            server = ae.make_server(address, evt_handlers=handlers, server_class=_NoDelayServer)
        except OSError as e:
            raise NetworkError(
                f"cannot listen on {self.bind}:{self.port} for C-MOVE results "
                f"({e.strerror or e}; is duckpacs serve using the port?)"
            ) from e
        ae._servers.append(server)  # so that server.shutdown() can deregister it
        threading.Thread(target=server.serve_forever, name="migrate-move", daemon=True).start()
        self._server = server
        self.port = int(server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    @contextmanager
    def route(self, study_uid: str, receiver: Receiver) -> Iterator[Retrieved]:
        """Deliver instances of ``study_uid`` to ``receiver`` while the block runs."""
        route = _Route(receiver, Retrieved(), [])
        with self._lock:
            self._routes[study_uid] = route
        try:
            yield route.got
        finally:
            with self._lock:
                del self._routes[study_uid]
            if route.errors:
                first = route.errors[0]
                route.got.problem = f"could not keep {len(route.errors)} instances: {first}"

    def _on_store(self, event: evt.Event) -> int:
        try:
            data = event.encoded_dataset()
            study = str(_core.describe(data).get("study_instance_uid") or "")
        except (DuckpacsError, ValueError):
            return CANNOT_UNDERSTAND
        with self._lock:
            route = self._routes.get(study)
        if route is None:
            return NOT_AUTHORIZED  # nothing we asked for
        return _keep(route.receiver, route.got, route.errors, event)


def move_study(
    peer: RemotePeer,
    listener: MoveListener,
    study_uid: str,
    series: list[str],
    receiver: Receiver,
) -> Retrieved:
    """C-MOVE ``study_uid`` (or only these of its series) to the listener's AE title."""
    ae = peer.ae()
    model = StudyRootQueryRetrieveInformationModelMove
    ae.add_requested_context(model)
    queries = []
    for uid in series or [""]:
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES" if uid else "STUDY"
        query.StudyInstanceUID = study_uid
        if uid:
            query.SeriesInstanceUID = uid
        queries.append(query)
    with listener.route(study_uid, receiver) as got:
        assoc = peer.associate(ae)
        try:
            if not any(cx.abstract_syntax == model for cx in assoc.accepted_contexts):
                got.refused = "the peer does not accept C-MOVE either"
                return got
            for query in queries:
                failed = got.failed
                for status, _ident in assoc.send_c_move(query, listener.ae_title, model):
                    _final(got, int(getattr(status, "Status", -1)), status, "C-MOVE")
                got.failed += failed
        finally:
            if assoc.is_established:
                assoc.release()
        if got.problem or got.refused:
            got.problem = (
                f"{got.problem or got.refused} (the peer must know {listener.ae_title} as a "
                f"move destination: this host, port {listener.port})"
            )
    return got
