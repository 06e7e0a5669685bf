"""Proof instance by instance: the SOP Instance UIDs the peer lists against what we hold.

Number of Study Related Instances (PS3.4 C.3.4) is optional and some peers return a stale
value, so a study counts as complete when every SOP Instance UID the peer lists for it at
IMAGE level (PS3.4 C.6.2) is held by the target. A peer that cuts IMAGE-level answers
(Orthanc's ``LimitFindInstances``) is asked series by series. Only where the peer lists no
instances at all does the verdict fall back to its count.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from duckpacs.ingest.migrate.journal import Journal
from duckpacs.ingest.migrate.peer import Finder, QueryRefused, RemoteInstance, RemoteStudy
from duckpacs.ingest.migrate.scope import Limits
from duckpacs.ingest.migrate.targets import Target


def image_limits() -> Limits:
    """Cap detection for IMAGE-level answers: a study may hold any number of instances, so
    only the peer's status, its limit once seen, and round counts raise suspicion."""
    return Limits(limit=sys.maxsize)


@dataclass(frozen=True)
class Listing:
    """The instances the peer lists for one study."""

    instances: dict[str, RemoteInstance] = field(default_factory=dict)
    cut: str = ""  # what the peer would not list in full, even series by series

    @property
    def uids(self) -> set[str]:
        return set(self.instances)

    def sop_classes(self) -> list[str]:
        return sorted({i.sop_class for i in self.instances.values() if i.sop_class})

    def series_of(self, sop_uids: set[str]) -> list[str]:
        """The series holding these instances (to move only what is lacking)."""
        return sorted({self.instances[u].series_uid for u in sop_uids if u in self.instances})


def list_instances(finder: Finder, study_uid: str, limits: Limits) -> Listing:
    """Every instance of a study, asked series by series if the whole answer may be cut."""
    found: dict[str, RemoteInstance] = {}

    def add(instance: RemoteInstance) -> None:
        found.setdefault(instance.sop_uid, instance)

    if not limits.suspect(finder.instances(study_uid, "", add)):
        return Listing(found)
    series: list[str] = []
    listed = finder.series(study_uid, series.append)
    cut = [f"its series list at {listed.count}"] if limits.definite(listed) else []
    for uid in dict.fromkeys(series):
        answer = finder.instances(study_uid, uid, add)
        if limits.suspect(answer) and limits.definite(answer):
            cut.append(f"series {uid} at {answer.count} instances")
    return Listing(found, "the peer cut " + ", ".join(cut) if cut else "")


@dataclass(frozen=True)
class Verdict:
    status: str  # done, incomplete, failed, missing
    reason: str = ""
    missing: tuple[str, ...] = ()


def judge(
    study: RemoteStudy, listing: Listing | None, lacking: set[str], held: int, where: str
) -> Verdict:
    """A study's verdict from what the peer lists (or, without a listing, announces) and
    what the target holds (``where``: "the archive" or "the folder")."""
    if listing is not None and listing.instances:
        if lacking:
            text = f"{len(lacking)} of {len(listing.instances)} instances not in {where}"
            return Verdict("incomplete", _also(text, listing.cut), tuple(sorted(lacking)))
        if listing.cut and study.instances is not None and held < study.instances:
            text = f"{where} holds {held} of {study.instances} instances"
            return Verdict("incomplete", _also(text, listing.cut))
        return Verdict("done")
    expected = study.instances
    if expected is None:
        return Verdict("unverifiable", "the peer neither lists its instances nor counts them")
    if held < expected:
        return Verdict("incomplete", f"{where} holds {held} of {expected} instances")
    return Verdict("done")


def _also(text: str, cut: str) -> str:
    return f"{text} ({cut})" if cut else text


def verify_studies(
    finder: Finder,
    journal: Journal,
    target: Target,
    where: str,
    on_study: Callable[[RemoteStudy, Verdict], None] | None = None,
) -> None:
    """Compare every study of the journal with the target; nothing is fetched. A study
    lacking instances becomes ``missing`` with their UIDs, and the next run fetches it."""
    limits = image_limits()
    held_counts = target.held
    for study in journal.all_studies():
        try:
            listing: Listing | None = list_instances(finder, study.uid, limits)
        except QueryRefused:
            listing = None  # a peer refusing IMAGE-level queries: judge by counts
        lacking = target.lacking(listing.uids) if listing is not None else set()
        held = held_counts([study.uid]).get(study.uid, 0) if held_counts else 0
        if held_counts is None and listing is not None:
            held = len(listing.uids - lacking)
        verdict = judge(study, listing, lacking, held, where)
        listed = len(listing.instances) if listing is not None else None
        journal.verified(study.uid, verdict.status, verdict.reason, listed, verdict.missing)
        if on_study is not None:
            on_study(study, verdict)
