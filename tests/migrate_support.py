"""A simulated legacy PACS for the migration planner's tests: C-FIND over a list of studies.

It matches like a C-FIND SCP (PS3.4 C.2.2.2): a Study Date range matches no study without a
date, a Study Time range no study without a time, ``AB*`` every Patient ID starting with AB
(including AB itself), an exact Patient ID only itself. Like a real peer it can cap its
answers at ``cap`` and end a cut answer with Cancel (Orthanc), with success, or with
"out of resources" before sending anything; it can refuse Patient Root; and it can cap
IMAGE-level answers at ``instance_cap``. Every query is logged in ``calls``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from duckpacs.ingest.migrate import (
    Answer,
    QueryRefused,
    RemoteInstance,
    RemotePatient,
    RemoteStudy,
    Scope,
)


@dataclass
class Study:
    uid: str
    date: str = ""
    time: str = ""
    patient: str = ""
    series: dict[str, list[str]] = field(default_factory=dict)  # series UID -> SOP UIDs
    announced: int | None = None  # Number of Study Related Instances as the peer says it

    @property
    def sops(self) -> list[str]:
        return [s for sops in self.series.values() for s in sops]


def study(uid: str, date: str = "", time: str = "", patient: str = "", instances: int = 1) -> Study:
    """A study with one series of ``instances`` instances, counted truthfully."""
    sops = [f"{uid}.{i}" for i in range(1, instances + 1)]
    return Study(uid, date, time, patient, {f"{uid}.0": sops}, instances)


@dataclass
class FakePeer:
    studies_held: list[Study]
    cap: int | None = None
    ending: str = "cancel"  # how a cut answer ends: "cancel", "success" or "refuse"
    patient_root: bool = True
    instance_cap: int | None = None
    calls: list[str] = field(default_factory=list)

    def _answer(
        self, hits: list[object], each: Callable[[object], None], cap: int | None
    ) -> Answer:
        if cap is not None and len(hits) > cap:
            if self.ending == "refuse":  # 0xA700 without a single answer
                return Answer(0, True)
            hits = hits[:cap]
            for hit in hits:
                each(hit)
            return Answer(len(hits), self.ending == "cancel")
        for hit in hits:
            each(hit)
        return Answer(len(hits))

    def studies(self, scope: Scope, each: Callable[[RemoteStudy], None]) -> Answer:
        self.calls.append(f"study {scope.key()}")
        hits = [
            RemoteStudy(s.uid, s.date, s.patient, s.announced)
            for s in self.studies_held
            if matches(scope, s)
        ]
        return self._answer(hits, each, self.cap)  # type: ignore[arg-type]

    def patients(self, scope: Scope, each: Callable[[RemotePatient], None]) -> Answer:
        self.calls.append(f"patient {scope.key()}")
        if not self.patient_root:
            raise QueryRefused("C-FIND patients: FAKE does not offer Patient Root")
        counts: dict[str, int] = {}
        for s in self.studies_held:
            if _patient_matches(scope, s.patient):
                counts[s.patient] = counts.get(s.patient, 0) + 1
        hits = [RemotePatient(p, n) for p, n in sorted(counts.items())]
        return self._answer(hits, each, self.cap)  # type: ignore[arg-type]

    def series(self, study_uid: str, each: Callable[[str], None]) -> Answer:
        self.calls.append(f"series {study_uid}")
        held = next(s for s in self.studies_held if s.uid == study_uid)
        return self._answer(list(held.series), each, self.cap)  # type: ignore[arg-type]

    def instances(
        self, study_uid: str, series_uid: str, each: Callable[[RemoteInstance], None]
    ) -> Answer:
        self.calls.append(f"image {study_uid} {series_uid}")
        held = next(s for s in self.studies_held if s.uid == study_uid)
        hits = [
            RemoteInstance(sop, uid, "1.2.840.10008.5.1.4.1.1.7")
            for uid, sops in held.series.items()
            if not series_uid or uid == series_uid
            for sop in sops
        ]
        return self._answer(hits, each, self.instance_cap)  # type: ignore[arg-type]


def matches(scope: Scope, s: Study) -> bool:
    """Date range, then hour range (an empty value matches no range), then Patient ID."""
    if scope.first is not None and scope.last is not None:
        first, last = scope.first.strftime("%Y%m%d"), scope.last.strftime("%Y%m%d")
        if not (s.date and first <= s.date <= last):
            return False
    if scope.hours is not None and not (
        s.time and scope.hours[0] <= int(s.time[:2]) <= scope.hours[1]
    ):
        return False
    return _patient_matches(scope, s.patient)


def _patient_matches(scope: Scope, patient: str) -> bool:
    if scope.patient is None:
        return True
    if scope.exact:
        return patient == scope.patient
    return patient.startswith(scope.patient)
