"""Matching of worklist entries against a Modality Worklist query (PS3.4 K.2.2.1, with the
attribute matching of C.2.2.2).

- an empty value matches everything (universal matching, C.2.2.2.3);
- ``*`` and ``?`` are wildcards in text values other than dates and times (C.2.2.2.4);
  person names match without regard to case, as most RIS do (C.2.2.2.4 leaves it open);
- dates and times match a single value or a range ``a-b``, ``-b``, ``a-`` (C.2.2.2.5); a
  start date range with a start time range is one date-time range (C.2.2.2.5.1: from the
  first date at the first time to the last date at the last time);
- UIDs match a list of UIDs separated by backslashes (C.2.2.2.2);
- the Scheduled Procedure Step Sequence's one item matches its own attributes against the
  entry's step (sequence matching, C.2.2.2.6).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from duckpacs.worklist.store import STEP_KEYS, TOP_KEYS

DATES = {"PatientBirthDate", "ScheduledProcedureStepStartDate"}
TIMES = {"ScheduledProcedureStepStartTime"}
NAMES = {"PatientName", "ReferringPhysicianName", "ScheduledPerformingPhysicianName"}
UIDS = {"StudyInstanceUID"}
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")


class BadQuery(ValueError):
    """A query value that cannot be matched (its reason goes to the Error Comment)."""


@dataclass
class Query:
    """Matching keys (keyword -> value) at both levels; step status asked for, if any."""

    top: dict[str, str] = field(default_factory=dict)
    step: dict[str, str] = field(default_factory=dict)
    step_status: str = ""


def _check_range(key: str, value: str) -> None:
    pattern = _DATE if key in DATES else _TIME
    parts = value.split("-") if "-" in value else [value]
    if len(parts) > 2 or not any(parts) or any(p and not pattern.match(p) for p in parts):
        kind = "YYYYMMDD" if key in DATES else "HHMMSS"
        raise BadQuery(f"{key} {value!r} is not a {kind} value or range")


def validate(query: Query) -> None:
    """Raise :class:`BadQuery` for a date or time the query cannot mean."""
    for key, value in {**query.top, **query.step}.items():
        if value and (key in DATES or key in TIMES):
            _check_range(key, value)


def _norm_time(value: str, end: bool) -> str:
    digits = value.split(".")[0]
    return digits.ljust(6, "9" if end else "0")


def _in_range(key: str, wanted: str, have: str) -> bool:
    if not have:
        return False
    norm = (lambda v, end: v) if key in DATES else _norm_time  # noqa: E731
    have = norm(have.replace(":", ""), False)
    if "-" not in wanted:
        return have.startswith(wanted.split(".")[0]) if key in TIMES else have == wanted
    low, high = wanted.split("-")
    return (not low or have >= norm(low, False)) and (not high or have <= norm(high, True))


def _wildcard(wanted: str, have: str, fold: bool) -> bool:
    pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in wanted)
    return re.fullmatch(pattern, have, (re.IGNORECASE if fold else 0) | re.DOTALL) is not None


def value_matches(key: str, wanted: str, have: str) -> bool:
    wanted = wanted.strip()
    if not wanted or wanted == "*":
        return True
    have = (have or "").strip()
    if key in DATES or key in TIMES:
        return _in_range(key, wanted, have)
    if key in UIDS:
        return have in wanted.split("\\")
    fold = key in NAMES
    if "*" in wanted or "?" in wanted:
        return _wildcard(wanted, have, fold)
    return have.casefold() == wanted.casefold() if fold else have == wanted


def step_status(entry: dict[str, Any]) -> str:
    """The entry's Scheduled Procedure Step Status (0040,0020) as a modality reads it."""
    return "STARTED" if entry["status"] == "IN PROGRESS" else entry["status"]


DATE_KEY, TIME_KEY = "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime"


def _combined(date_range: str, time_range: str, date: str, start_time: str) -> bool:
    """Date and time ranges as one date-time range (C.2.2.2.5.1)."""
    if not date:
        return False
    d_low, d_high = date_range.split("-")
    t_low, t_high = time_range.split("-")
    have = date + _norm_time(start_time.replace(":", "") or "000000", False)
    low = d_low + _norm_time(t_low, False) if d_low else ""
    high = d_high + _norm_time(t_high, True) if d_high else ""
    return (not low or have >= low) and (not high or have <= high)


def matches(query: Query, entry: dict[str, Any]) -> bool:
    if query.step_status and not value_matches("", query.step_status, step_status(entry)):
        return False
    date_range, time_range = query.step.get(DATE_KEY, ""), query.step.get(TIME_KEY, "")
    if "-" in date_range and "-" in time_range:
        if not _combined(date_range, time_range, entry[DATE_KEY], entry[TIME_KEY]):
            return False
        step = {k: v for k, v in query.step.items() if k not in (DATE_KEY, TIME_KEY)}
        query = Query(top=query.top, step=step)
    for key, wanted in query.top.items():
        if key in TOP_KEYS and not value_matches(key, wanted, entry[key]):
            return False
    for key, wanted in query.step.items():
        if key in STEP_KEYS and not value_matches(key, wanted, entry[key]):
            return False
    return True
