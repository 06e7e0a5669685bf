"""Retention rules (``[[retention]]``): studies removed once old enough.

A study matching a rule's ``match`` (study-level keys, C-FIND's matching, PS3.4 C.2.2.2) is
removed when ``keep_days`` have passed since its Study Date, or since its first instance
arrived when it has no Study Date. Protected studies and studies with instances still
waiting to be forwarded are kept. Each removal is audit-logged
(:mod:`duckpacs.policy.removal`).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from duckpacs import logs
from duckpacs.archive.facade import Archive
from duckpacs.config import Retention
from duckpacs.errors import ConfigError, DuckpacsError
from duckpacs.policy.removal import Removed, remove_study
from duckpacs.web.audit import AuditLog

log = logs.get("policy")


def check(archive: Archive, rules: list[Retention]) -> None:
    """Compile each rule once, so a bad value stops ``serve`` with the rule's name."""
    for rule in rules:
        try:
            archive.index.studies_dated_before(rule.match, datetime.date(1900, 1, 1))
        except DuckpacsError as e:
            raise ConfigError(f"retention {rule.name!r}: match: {e}") from None


def apply(
    archive: Archive,
    audit: AuditLog,
    rules: list[Retention],
    spared: Callable[[], set[str]],
    today: datetime.date | None = None,
) -> list[Removed]:
    """Remove what the rules say has been kept long enough; returns what was removed."""
    today = today or datetime.date.today()
    removed: list[Removed] = []
    for rule in rules:
        cutoff = today - datetime.timedelta(days=rule.keep_days)
        keep = spared()
        for study in archive.index.studies_dated_before(rule.match, cutoff):
            if study in keep:
                continue
            reason = f"older than {rule.keep_days} days (before {cutoff.isoformat()})"
            removed.append(
                remove_study(archive, audit, study, policy=f"retention:{rule.name}", reason=reason)
            )
    if removed:
        logs.event(log, "retention applied", studies=len(removed))
    return removed
