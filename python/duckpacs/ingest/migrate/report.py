"""The reconciliation a migration prints: what the peer has against what we hold."""

from __future__ import annotations

from dataclasses import dataclass, field

# Missing SOP Instance UIDs printed per study in the text report (--json lists them all).
SHOWN_UIDS = 5


@dataclass(frozen=True)
class NotDone:
    """A study not (or no longer) complete: its status, why, and the instances it lacks."""

    uid: str
    status: str
    reason: str
    missing: tuple[str, ...] = ()

    def line(self) -> str:
        text = f"{self.status}: {self.uid}: {self.reason}"
        if self.missing:
            shown = ", ".join(self.missing[:SHOWN_UIDS])
            more = len(self.missing) - SHOWN_UIDS
            text += f": {shown}" + (f" and {more} more (--json lists all)" if more > 0 else "")
        return text


@dataclass
class Reconciliation:
    """Remote versus held, for the final report of a migration or a ``--verify`` run."""

    studies_found: int = 0
    instances_found: int = 0
    studies_done: int = 0
    instances_received: int = 0
    not_done: list[NotDone] = field(default_factory=list)
    windows: int = 0
    instances_archived: int | None = None  # the index's count for these studies (archive mode)
    found_outside: int = 0  # studies the date windows did not match, found by the enumeration
    enumeration: str = ""  # how the enumeration listed the peer's studies
    undated: int = 0  # studies without a (valid) Study Date
    by_move: int = 0  # studies that needed C-MOVE
    get_refused: str = ""  # why C-GET did not do in this run, if it did not
    gaps: list[str] = field(default_factory=list)  # studies the peer has but cannot list
    caveats: list[str] = field(default_factory=list)  # what the enumeration could not see
    verified: bool = False  # a --verify run: SOP Instance UIDs compared, nothing fetched

    @property
    def complete(self) -> bool:
        return self.studies_found == self.studies_done and not self.gaps

    def lines(self) -> list[str]:
        found = f"{self.windows:,} date-window quer{'y' if self.windows == 1 else 'ies'}"
        if self.enumeration:
            found += f"; {self.found_outside:,} more found outside the windows by "
            found += self.enumeration
        out = [
            f"remote: {self.studies_found:,} studies, {self.instances_found:,} instances ({found})"
        ]
        if self.undated:
            out.append(f"studies without a Study Date: {self.undated:,}")
        if self.verified:
            out.append(
                f"verified: {self.studies_done:,} studies hold every instance the peer lists"
            )
        else:
            out.append(
                f"stored: {self.studies_done:,} studies complete, "
                f"{self.instances_received:,} instances received"
            )
        if self.instances_archived is not None:
            out.append(f"archive: {self.instances_archived:,} instances of these studies")
        if self.by_move:
            why = f" ({self.get_refused})" if self.get_refused else ""
            out.append(f"retrieved by C-MOVE: {self.by_move:,} studies{why}")
        out += [n.line() for n in self.not_done]
        out += [f"cannot be listed: {g}" for g in self.gaps]
        out += [f"note: {c}" for c in self.caveats]
        return out

    def as_json(self) -> dict[str, object]:
        return {
            "studies_found": self.studies_found,
            "instances_found": self.instances_found,
            "studies_done": self.studies_done,
            "instances_received": self.instances_received,
            "instances_archived": self.instances_archived,
            "windows": self.windows,
            "found_outside_windows": self.found_outside,
            "enumeration": self.enumeration or None,
            "undated": self.undated,
            "retrieved_by_move": self.by_move,
            "get_refused": self.get_refused or None,
            "verified": self.verified,
            "complete": self.complete,
            "not_done": [
                {"uid": n.uid, "status": n.status, "reason": n.reason, "missing": list(n.missing)}
                for n in self.not_done
            ],
            "cannot_be_listed": self.gaps,
            "caveats": self.caveats,
        }
