"""What one C-FIND asks for, and how to split it when the answer may be cut.

A :class:`Scope` is a set of studies the peer can be asked for in one query: a Study Date
range (PS3.4 C.2.2.2.5), within one day an hour range of Study Time, and a Patient ID,
either a prefix (wildcard matching, PS3.4 C.2.2.2.4) or one exact value. When a scope's
answer may be cut at the peer's limit, :meth:`Scope.split` gives smaller scopes whose union
holds the same studies, as far as C-FIND keys can express it: date halves down to one day,
then hour halves down to one hour, then Patient ID prefixes one character longer, each
beside the exact ID equal to the prefix itself. What a split cannot reach is said here, and
the callers report it: splitting a day by hour loses studies with an empty Study Time (an
empty value matches no range), and splitting by Patient ID loses IDs that are empty or begin
with a character outside :data:`ALPHABET`. The enumeration after the date windows
(:mod:`~duckpacs.ingest.migrate.plan`) finds the first kind again.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

# Characters that extend a Patient ID prefix: the Default Character Repertoire (PS3.5
# 6.1.2.1) without space (insignificant at the start of an LO value), backslash (the value
# separator), the wildcards "*" and "?" (PS3.4 C.2.2.2.4), and "%" and "_", which peers that
# hand the key to SQL LIKE unescaped (Orthanc does) take as wildcards too: a prefix of "%"
# would match every study at every length.
ALPHABET = "".join(
    c for c in string.digits + string.ascii_letters + string.punctuation if c not in "\\*?%_"
)
# Longest Patient ID (LO, PS3.5 6.2): no prefix grows beyond it.
LO_MAX = 64


DA = "%Y%m%d"


def looks_round(count: int) -> bool:
    """Counts peers use as limits (100, 250, 500, 1000, 256, 1024...): worth a split."""
    return count >= 50 and (count % 50 == 0 or count & (count - 1) == 0)


@dataclass(frozen=True)
class Answer:
    """How many matches a C-FIND returned, and whether its final status says it was cut."""

    count: int
    capped: bool = False


@dataclass
class Limits:
    """When to suspect that a peer cut an answer at its own limit.

    A peer that has once said so by status (Cancel, a warning, out of resources) is
    believed from then on: its other answers are whole. Until then, an answer of ``limit``
    matches or more (``--window-limit``: some peers cut at their limit and still end with
    success) is taken as cut, and one of a round count as possibly cut. ``seen`` is the
    largest count of an answer the peer said it cut: its own limit, learnt on the way.
    """

    limit: int = 500
    seen: int | None = None
    signals: bool = False  # the peer says by status when it cuts an answer

    def suspect(self, answer: Answer) -> bool:
        """True when the answer may be missing matches: the query must be split."""
        if answer.capped:
            self.signals = True
            self.seen = max(self.seen or 0, answer.count) or None
        if self.signals:
            return answer.capped or answer.count >= self.limit
        return answer.count >= self.limit or looks_round(answer.count)

    def definite(self, answer: Answer) -> bool:
        """True when the answer is known to be cut (by status, or at the configured limit)."""
        return answer.capped or answer.count >= self.limit


@dataclass(frozen=True)
class Scope:
    """Studies matched by one STUDY-level C-FIND.

    ``first``/``last`` bound the Study Date (None: any date, and no date at all); ``hours``
    bounds the Study Time within a single day; ``patient`` is a Patient ID prefix, or the
    whole ID when ``exact``.
    """

    first: date | None = None
    last: date | None = None
    hours: tuple[int, int] | None = None
    patient: str | None = None
    exact: bool = False

    @property
    def study_date(self) -> str:
        if self.first is None or self.last is None:
            return ""
        if self.first == self.last:
            return self.first.strftime(DA)
        return f"{self.first.strftime(DA)}-{self.last.strftime(DA)}"

    @property
    def study_time(self) -> str:
        if self.hours is None:
            return ""
        low, high = self.hours
        return f"{low:02d}0000-{high:02d}5959.999999"

    @property
    def patient_key(self) -> str:
        if self.patient is None:
            return ""
        return self.patient if self.exact else f"{self.patient}*"

    def key(self) -> str:
        """A stable name for the journal: ``20200101-20201231``, ``20200615 T12-17 P=AB*``."""
        parts = [self.study_date or "*"]
        if self.hours is not None:
            parts.append(f"T{self.hours[0]:02d}-{self.hours[1]:02d}")
        if self.patient is not None:
            parts.append(f"P={self.patient_key}")
        return " ".join(parts)

    def describe(self) -> str:
        """For messages: the C-FIND keys that make this scope."""
        keys = []
        if self.study_date:
            keys.append(f"StudyDate={self.study_date}")
        if self.study_time:
            keys.append(f"StudyTime={self.study_time}")
        if self.patient is not None:
            keys.append(f"PatientID={self.patient_key}")
        return " ".join(keys) or "every study"

    def split(self) -> list[Scope]:
        """Smaller scopes covering this one, or [] when it cannot be split further."""
        if self.first is not None and self.last is not None and self.first < self.last:
            middle = self.first + (self.last - self.first) // 2
            return [replace(self, last=middle), replace(self, first=middle + timedelta(days=1))]
        if self.first is not None and self.hours is None:
            return [replace(self, hours=(0, 11)), replace(self, hours=(12, 23))]
        if self.hours is not None and self.hours[0] < self.hours[1]:
            low, high = self.hours
            half = (low + high) // 2
            return [replace(self, hours=(low, half)), replace(self, hours=(half + 1, high))]
        return self.split_by_patient()

    def split_by_patient(self) -> list[Scope]:
        if self.exact:
            return []
        prefix = self.patient or ""
        longer = (
            [replace(self, patient=prefix + c) for c in ALPHABET] if len(prefix) < LO_MAX else []
        )
        # "AB*" is "AB" itself plus "AB0*" ... "ABz*"; an empty prefix has no exact ID to ask
        # for (an empty Patient ID key is universal matching).
        return ([replace(self, exact=True)] if prefix else []) + longer


Ask = Callable[[Scope], Answer]


@dataclass
class Partition:
    """What :func:`partition` did: queries sent, and scopes still cut at the floor."""

    queries: int = 0
    cut: list[tuple[Scope, int]] = field(default_factory=list)


def partition(
    root: Scope,
    ask: Ask,
    limits: Limits,
    *,
    state: Callable[[Scope], str | None] = lambda scope: None,
    record: Callable[[Scope, Answer, str], None] = lambda scope, answer, state: None,
) -> Partition:
    """Query ``root``, splitting every scope whose answer may be cut, depth first.

    ``ask`` sends one query (its matches go wherever the caller collects them: a cut answer
    still lists real studies). ``state`` tells scopes already handled by an earlier run
    (``"done"`` or ``"cut"``: skip; ``"split"``: query its parts); ``record`` notes each
    scope's outcome: ``"done"``, ``"split"`` or ``"cut"`` (cut, and it cannot be split).
    """
    result = Partition()
    stack = [root]
    while stack:
        scope = stack.pop()
        known = state(scope)
        if known in ("done", "cut"):
            continue
        parts = scope.split()
        if known != "split":
            answer = ask(scope)
            result.queries += 1
            if not limits.suspect(answer):
                record(scope, answer, "done")
                continue
            if not parts:
                cut = limits.definite(answer)
                record(scope, answer, "cut" if cut else "done")
                if cut:
                    result.cut.append((scope, answer.count))
                continue
            record(scope, answer, "split")
        stack.extend(reversed(parts))
    return result
