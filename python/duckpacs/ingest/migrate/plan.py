"""Finding every study of the peer: date windows, then an enumeration of what they miss.

**Date windows.** The span ``since..until`` is queried at STUDY level by Study Date range
(PS3.4 C.2.2.2.5). A window whose answer may be cut (:class:`~.peer.Limits`) is split
(:meth:`~.scope.Scope.split`: date halves, then hours of Study Time, then Patient ID) until
no answer is. Windows are kept in the journal, so a resumed run queries none twice.

**Enumeration.** No date range matches a study without a Study Date, with a date that is not
one, or dated outside the span; splitting a day by hour misses studies with an empty Study
Time. So after the windows, :func:`enumerate_rest` lists the peer's studies again without a
date: first with one query (every key universal). If that answer may be cut, it asks for
every patient at PATIENT level (Patient Root, PS3.4 C.6.1) with Number of Patient Related
Studies, and queries the studies of each patient for whom fewer studies are known than the
peer counts (one query per such patient, not per patient). A peer without Patient Root is
enumerated by Patient ID prefixes at STUDY level instead. What cannot be listed is reported
with its count when the peer gives one: the studies of a patient without a Patient ID (no key
selects them), and those of a patient with more studies than the peer answers without a
Study Date.

With an explicit span (``--since``/``--until``) the enumeration adds only studies without a
valid Study Date, which could belong to it; otherwise it adds every study not yet found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from duckpacs.ingest.migrate.journal import Journal, dated
from duckpacs.ingest.migrate.peer import Finder, QueryRefused, RemotePatient, RemoteStudy
from duckpacs.ingest.migrate.scope import Answer, Limits, Scope, partition

FIRST_DAY = date(1900, 1, 1)
# Studies buffered before they are written to the journal (an answer streams into it).
FLUSH_EVERY = 1000


@dataclass(frozen=True)
class Span:
    """The Study Dates asked for; None: not given (the span is then "everything")."""

    since: date | None = None
    until: date | None = None

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"--until {self.last} is before --since {self.first}")

    @property
    def first(self) -> date:
        return self.since or FIRST_DAY

    @property
    def last(self) -> date:
        return self.until or date.today()

    @property
    def bounded(self) -> bool:
        return self.since is not None or self.until is not None

    def root(self) -> Scope:
        return Scope(self.first, self.last)

    def wants(self, study: RemoteStudy) -> bool:
        """Whether the enumeration adds ``study`` (found outside the windows)."""
        return not self.bounded or not dated(study.study_date)

    def key(self) -> str:
        what = "undated" if self.bounded else "all"
        return f"sweep {what} {self.root().key()}"


@dataclass
class Collector:
    """Streams found studies into the journal; counts per patient those the span skips."""

    journal: Journal
    found_by: str
    wants: Callable[[RemoteStudy], bool] = lambda study: True
    buffer: list[RemoteStudy] = field(default_factory=list)
    skipped: dict[str, set[str]] = field(default_factory=dict)

    def __call__(self, study: RemoteStudy) -> None:
        if not self.wants(study):
            self.skipped.setdefault(study.patient_id, set()).add(study.uid)
            return
        self.buffer.append(study)
        if len(self.buffer) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.journal.add_studies(self.buffer, self.found_by)
            self.buffer = []

    def asker(self, finder: Finder) -> Callable[[Scope], Answer]:
        def ask(scope: Scope) -> Answer:
            answer = finder.studies(scope, self)
            self.flush()
            return answer

        return ask


def plan_windows(finder: Finder, journal: Journal, span: Span, limits: Limits) -> int:
    """Query the span by date windows, split while answers may be cut; return queries sent."""
    collect = Collector(journal, "window")

    def record(scope: Scope, answer: Answer, state: str) -> None:
        journal.record_scope(scope.key(), "window", answer.count, state)

    done = partition(
        span.root(),
        collect.asker(finder),
        limits,
        state=lambda scope: journal.scope_state(scope.key()),
        record=record,
    )
    return done.queries


Note = tuple[str, str, bool]  # (key, text, whether studies are known to be unlisted)


def enumerate_rest(finder: Finder, journal: Journal, span: Span, limits: Limits) -> int:
    """Find the studies the date windows cannot match (see the module); return queries sent.

    Done once per span and day: the journal keeps the outcome and its notes.
    """
    key = span.key()
    if journal.scope_state(key) == "done":
        return 0
    sweep = _Sweep(finder, journal, span, limits, Collector(journal, "sweep", span.wants))
    answer = sweep.ask(Scope())
    if not limits.suspect(answer):
        how = "listing every study"
    else:
        try:
            how = sweep.by_patient()
        except QueryRefused as refused:
            how = sweep.by_prefix(str(refused))
    journal.set_notes(sweep.notes)
    journal.record_scope(key, "sweep", answer.count, "done", how)
    return sweep.queries


@dataclass
class _Sweep:
    """One enumeration: what it asks with, what it found out, how many queries it sent."""

    finder: Finder
    journal: Journal
    span: Span
    limits: Limits
    collect: Collector
    notes: list[Note] = field(default_factory=list)
    queries: int = 0

    def ask(self, scope: Scope) -> Answer:
        self.queries += 1
        return self.collect.asker(self.finder)(scope)

    def by_patient(self) -> str:
        """Patient-level enumeration; the studies of each patient whose count is not met."""
        patients: dict[str, int | None] = {}

        def add(patient: RemotePatient) -> None:
            # A patient can come twice (in a cut answer, then in a part of it): keep a count.
            if patients.get(patient.patient_id) is None:
                patients[patient.patient_id] = patient.studies

        listed = partition(Scope(), lambda scope: self.finder.patients(scope, add), self.limits)
        self.queries += listed.queries
        if listed.queries > 1:
            self.notes.append(("caveat patients", _PREFIX_CAVEAT, False))
        known = self.journal.patient_counts()
        for pid in sorted(patients):
            expected = patients[pid]
            if expected is not None and known.get(pid, 0) >= expected:
                continue
            if pid == "":
                self.notes.append(_without_id(expected, known.get("", 0)))
            else:
                self.studies_of(pid, expected)
        return "listing every patient's studies"

    def by_prefix(self, refused: str) -> str:
        """Studies by Patient ID prefix at STUDY level, for peers without Patient Root."""
        listed = partition(Scope(), self.ask, self.limits)
        for scope, _count in listed.cut:
            self.studies_of(scope.patient or "", None)
        self.notes.append(("caveat prefix", f"{_PREFIX_CAVEAT} ({refused})", False))
        return "Patient ID prefixes"

    def studies_of(self, pid: str, expected: int | None) -> None:
        """Every study of one patient: one query, or date windows of that patient if cut."""
        first = partition(Scope(patient=pid, exact=True), self.ask, self.limits)
        if first.cut:
            dates = Scope(self.span.first, self.span.last, patient=pid, exact=True)
            partition(dates, self.ask, self.limits)
        listed = self.journal.patient_counts().get(pid, 0)
        listed += len(self.collect.skipped.get(pid, ()))
        if expected is not None and listed < expected:
            text = (
                f"patient {pid}: {expected} studies at the peer, {listed} listed (the rest have "
                "no Study Date and the peer caps its answers)"
            )
            self.notes.append((f"gap patient {pid}", text, True))
        elif expected is None and first.cut:
            cut = first.cut[0][1]
            text = f"patient {pid}: the peer cut the answer at {cut} studies and gives no count"
            self.notes.append((f"gap patient {pid}", text, True))


def _without_id(expected: int | None, have: int) -> Note:
    """The note on a patient without a Patient ID: no C-FIND key selects its studies."""
    why = "no C-FIND key selects them on a peer that caps its answers"
    if expected is None:
        text = f"a patient without a Patient ID, with a number of studies not given ({why})"
        return ("caveat patient without id", text, False)
    text = f"{expected - have} of {expected} studies of a patient without a Patient ID ({why})"
    return ("gap patient without id", text, True)


_PREFIX_CAVEAT = (
    "the peer caps its answers, so studies were listed by Patient ID prefix, which cannot "
    "reach a Patient ID that is empty or begins with %, _ or a character outside ASCII"
)
