"""The legacy PACS as a migration sees it: who it is, and C-FIND against it (PS3.4 C.4.1).

:class:`DimseFinder` asks the questions a migration needs (studies of a scope, patients,
series and instances of a study) over one association, reopened when the peer drops it.
Answers stream to a callback instead of being held, so listing every study of a big peer at
once costs no memory; the returned :class:`Answer` says how many came and whether the peer
said it stopped early.

Peers that cap their answers (Orthanc's ``LimitFindResults``, dcm4chee's query limits) end a
cut answer in different ways: Orthanc with Cancel (0xFE00), others with a warning (0xBxxx),
with "out of resources" (0xA7xx, sometimes before any answer), or with plain success.
:class:`Limits` turns an answer into "trust it" or "suspect a cap": from the status once
the peer has shown it signals cuts, otherwise from the configured limit and from counts that
look like a round limit.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from duckpacs.errors import NetworkError
from duckpacs.ingest.migrate.scope import Answer, Scope
from duckpacs.net.tls import DialArgs, pynetdicom_args

PENDING = (0xFF00, 0xFF01)
# Final C-FIND statuses that mean "there was more" (PS3.4 C.4.1.1.4): Cancel, any warning,
# and "Refused: Out of resources", which some peers send when a query matches too much.
CANCEL = 0xFE00


def cut_short(code: int) -> bool:
    """Whether a final C-FIND status says the peer did not send every match."""
    return code == CANCEL or 0xA700 <= code <= 0xA7FF or 0xB000 <= code <= 0xBFFF


@dataclass(frozen=True)
class RemotePeer:
    """The legacy PACS: its AE title, host and port, and the AE title we call it with."""

    ae_title: str
    host: str
    port: int
    calling_ae: str = "DUCKPACS"
    timeout: float = 60.0
    # Largest PDU we accept (PS3.8 D.1; 0 = no limit). pynetdicom's default, 16 KiB, splits
    # each received instance into many PDUs, and one association handles each in turn.
    max_pdu: int = 262144
    # DICOM TLS to this peer: duckpacs.net.tls.dial_args (None: plain TCP).
    tls: DialArgs | None = None

    def ae(self) -> AE:
        """A pynetdicom AE calling as us, with this peer's timeouts and PDU size."""
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.maximum_pdu_size = self.max_pdu
        return ae

    def associate(self, ae: AE, **kwargs: Any) -> Association:
        if self.tls is not None:
            kwargs["tls_args"] = pynetdicom_args(self.tls)
        assoc = ae.associate(self.host, self.port, ae_title=self.ae_title, **kwargs)
        if not assoc.is_established:
            raise NetworkError(
                f"cannot associate with {self.ae_title}@{self.host}:{self.port} "
                f"(rejected, aborted or unreachable)"
            )
        no_delay(getattr(assoc.dul.socket, "socket", None))
        return assoc


def settle(assoc: Association) -> None:
    """Wait until pynetdicom's reactor thread has run since the previous request ended.

    pynetdicom (3.0) pauses the association's reactor while a request waits for responses
    and wakes it when the request ends. A new request sent before the woken reactor has run
    finds it still flagged paused, and the reactor may then take the new request's first
    response off the queue and drop it ("Received unexpected C-FIND service message"): an
    answer one match short that says nothing of it (seen under load, 15 listings in 5,553).
    The reactor clears the flag as soon as it runs, so wait for that (at most a second).
    """
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if checkpoint is None or not checkpoint.is_set():
        return
    deadline = time.monotonic() + 1.0
    while getattr(assoc, "_is_paused", False) and assoc.is_established:
        if time.monotonic() > deadline:
            return
        time.sleep(0.0001)


def no_delay(sock: socket.socket | None) -> None:
    """Turn Nagle's algorithm off. pynetdicom writes a request's command and its identifier
    as two PDUs; the second waits for the peer's delayed ACK (40 ms a C-FIND against Orthanc,
    4.5 ms without)."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True)
class RemoteStudy:
    """One study as the peer describes it in a C-FIND response."""

    uid: str
    study_date: str
    patient_id: str
    instances: int | None
    sop_classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RemotePatient:
    """A patient and how many studies the peer holds for it (None: not returned)."""

    patient_id: str
    studies: int | None


@dataclass(frozen=True)
class RemoteInstance:
    """One instance listed at IMAGE level."""

    sop_uid: str
    series_uid: str
    sop_class: str


class _Aborted(Exception):
    """The association ended before the C-FIND's final response."""


class QueryRefused(NetworkError):
    """The peer refused a kind of query (context not accepted, or a failure status)."""


def number(value: object) -> int | None:
    """An IS value from an answer, or None when absent, empty or not a number."""
    try:
        return int(str(value).strip()) if value not in (None, "") else None
    except ValueError:
        return None


def _multi(value: object) -> list[str]:
    if value is None or value == "":
        return []
    items = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    return [str(v) for v in items if str(v)]


def study_from(ident: Dataset) -> RemoteStudy | None:
    if not ident.get("StudyInstanceUID"):
        return None
    return RemoteStudy(
        str(ident.StudyInstanceUID),
        str(ident.get("StudyDate", "") or ""),
        str(ident.get("PatientID", "") or ""),
        number(ident.get("NumberOfStudyRelatedInstances")),
        tuple(_multi(ident.get("SOPClassesInStudy"))),
    )


def patient_from(ident: Dataset) -> RemotePatient | None:
    if "PatientID" not in ident:
        return None
    return RemotePatient(
        str(ident.get("PatientID") or ""), number(ident.get("NumberOfPatientRelatedStudies"))
    )


def instance_from(ident: Dataset) -> RemoteInstance | None:
    if not ident.get("SOPInstanceUID"):
        return None
    return RemoteInstance(
        str(ident.SOPInstanceUID),
        str(ident.get("SeriesInstanceUID", "") or ""),
        str(ident.get("SOPClassUID", "") or ""),
    )


class Finder(Protocol):
    """What a migration asks the peer; :class:`DimseFinder` asks it over DIMSE."""

    def studies(self, scope: Scope, each: Callable[[RemoteStudy], None]) -> Answer: ...

    def patients(self, scope: Scope, each: Callable[[RemotePatient], None]) -> Answer: ...

    def series(self, study_uid: str, each: Callable[[str], None]) -> Answer: ...

    def instances(
        self, study_uid: str, series_uid: str, each: Callable[[RemoteInstance], None]
    ) -> Answer: ...


class DimseFinder:
    """C-FIND against the peer over one association (Study Root and Patient Root).

    Use as a context manager; the association opens at the first query and is reopened if
    the peer released or aborted it in between (peers close idle associations).
    """

    def __init__(self, peer: RemotePeer) -> None:
        self.peer = peer
        self._assoc: Association | None = None

    def __enter__(self) -> DimseFinder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.release()
        self._assoc = None

    def _association(self) -> Association:
        if self._assoc is None or not self._assoc.is_established:
            ae = self.peer.ae()
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
            ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
            self._assoc = self.peer.associate(ae)
        return self._assoc

    def studies(self, scope: Scope, each: Callable[[RemoteStudy], None]) -> Answer:
        """STUDY level (Study Root) for ``scope``'s date, time and Patient ID keys."""
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        query.StudyDate = scope.study_date
        query.StudyTime = scope.study_time
        query.PatientID = scope.patient_key
        query.NumberOfStudyRelatedInstances = ""
        query.SOPClassesInStudy = ""
        model = StudyRootQueryRetrieveInformationModelFind
        return self._find(query, model, scope.describe(), study_from, each)

    def patients(self, scope: Scope, each: Callable[[RemotePatient], None]) -> Answer:
        """PATIENT level (Patient Root, PS3.4 C.6.1) with each patient's study count."""
        query = Dataset()
        query.QueryRetrieveLevel = "PATIENT"
        query.PatientID = scope.patient_key
        query.NumberOfPatientRelatedStudies = ""
        model = PatientRootQueryRetrieveInformationModelFind
        return self._find(query, model, f"patients {scope.describe()}", patient_from, each)

    def series(self, study_uid: str, each: Callable[[str], None]) -> Answer:
        """SERIES level: the Series Instance UIDs of one study."""
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = ""

        def uid(ident: Dataset) -> str | None:
            return str(ident.SeriesInstanceUID) if ident.get("SeriesInstanceUID") else None

        model = StudyRootQueryRetrieveInformationModelFind
        return self._find(query, model, f"series of {study_uid}", uid, each)

    def instances(
        self, study_uid: str, series_uid: str, each: Callable[[RemoteInstance], None]
    ) -> Answer:
        """IMAGE level: SOP Instance UID, series and SOP class of each instance (PS3.4 C.6.2)
        of a study, or of one of its series when ``series_uid`` is given."""
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = series_uid
        query.SOPInstanceUID = ""
        query.SOPClassUID = ""
        model = StudyRootQueryRetrieveInformationModelFind
        what = f"instances of {series_uid or study_uid}"
        return self._find(query, model, what, instance_from, each)

    def _find(
        self,
        query: Dataset,
        model: str,
        what: str,
        parse: Callable[[Dataset], Any],
        each: Callable[[Any], None],
    ) -> Answer:
        """One C-FIND. Peers end long-lived associations (Orthanc aborts one after about
        ``DicomScpTimeout`` seconds however busy), so a query that gets no answer on an
        association that served earlier ones is sent once more on a new association."""
        reused = self._assoc is not None and self._assoc.is_established
        try:
            return self._find_once(self._association(), query, model, what, parse, each)
        except _Aborted:
            self._assoc = None
            if reused:
                try:
                    return self._find_once(self._association(), query, model, what, parse, each)
                except _Aborted:
                    self._assoc = None
            raise NetworkError(
                f"C-FIND {what}: {self.peer.ae_title} sent no answer (it aborted; "
                f"does it know our AE title {self.peer.calling_ae}?)"
            ) from None

    def _find_once(
        self,
        assoc: Association,
        query: Dataset,
        model: str,
        what: str,
        parse: Callable[[Dataset], Any],
        each: Callable[[Any], None],
    ) -> Answer:
        if not any(cx.abstract_syntax == model for cx in assoc.accepted_contexts):
            raise QueryRefused(f"C-FIND {what}: {self.peer.ae_title} does not offer {model}")
        settle(assoc)
        count, capped = 0, False
        for status, ident in assoc.send_c_find(query, model):
            code = int(getattr(status, "Status", -1))
            if code in PENDING:
                item = parse(ident) if ident is not None else None
                if item is not None:
                    count += 1
                    each(item)
            elif code == 0x0000:
                break
            elif cut_short(code):
                capped = True
            elif code < 0:  # pynetdicom's empty status: no response before the association ended
                raise _Aborted
            else:
                raise QueryRefused(f"C-FIND {what} failed with status 0x{code:04X}")
        return Answer(count, capped)
