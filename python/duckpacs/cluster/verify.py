"""``duckpacs cluster verify``: every instance the shared index lists, read back from the
bucket as another node would read it.

The index names each instance by the node that wrote it and a place in that node's packs;
the instance is read through this node's store at the remote location
(``pack | number << 48``), so the check covers what a workstation on any node relies on:
the row is there, the pack is in the bucket, the record at that place is the instance.
Without ``--deep`` each record's head is read and checked (its own checksum, its length
against the row's); with ``--deep`` the whole instance is rebuilt from its chunks, each
checked, and its SHA-256 compared with the one computed when it arrived.

An instance whose pack the bucket does not hold is counted apart, as *not in the bucket*:
its node may not have uploaded it yet (a running node seals and uploads within seconds, a
stopped one at its next start), or the object was lost. A second run a minute later tells
the two apart; what stays missing is for the node that wrote it to upload again (its
``store/packs/uploads.log`` says what it believes the bucket holds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from duckpacs.errors import ConfigError, DuckpacsError
from duckpacs.index.pg.nodes import NUMBER_SHIFT

NOT_UPLOADED = "not in object storage yet"
PAGE = 5000


@dataclass
class NodeReport:
    """What the check found for one node's instances."""

    name: str
    number: int | None
    instances: int = 0
    checked: int = 0
    bytes: int = 0
    not_in_bucket: int = 0
    damaged: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.name,
            "number": self.number,
            "instances": self.instances,
            "checked": self.checked,
            "bytes": self.bytes,
            "not_in_bucket": self.not_in_bucket,
            "damaged": self.damaged,
        }


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def instance_rows(index: Any, node: str | None) -> Iterator[tuple[str, int, int, int, str]]:
    """(node, pack, offset, length, SOP Instance UID) of every instance, a page at a time
    (keyset on ``iid``, so a million rows never sit in memory at once)."""
    last = -1
    only = f" AND node = {_quoted(node)}" if node is not None else ""
    while True:
        rows = index.sql(
            'SELECT iid, node, pack, "offset", length, sop_instance_uid FROM instances '
            f"WHERE iid > {int(last)}{only} ORDER BY iid LIMIT {PAGE}"
        ).rows
        if not rows:
            return
        for iid, name, pack, offset, length, uid in rows:
            last = iid
            yield str(name), int(pack), int(offset), int(length), str(uid)


def verify_shared(
    index: Any,
    store: Any,
    *,
    deep: bool,
    node: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[NodeReport]:
    """Check every instance of ``node`` (or of every node) through the bucket; ``store`` is
    a store opened with the bucket (``[store] backend = "s3"``)."""
    numbers = {str(n["name"]): n["number"] for n in index.nodes()}
    if node is not None and node not in numbers:
        raise ConfigError(f"no node named {node!r} in the shared index")
    for name, number in numbers.items():
        if number is not None:
            store.name_node(int(number), name)
    reports: dict[str, NodeReport] = {}
    for name, pack, offset, length, uid in instance_rows(index, node):
        number = numbers.get(name)
        report = reports.setdefault(name, NodeReport(name, number))
        report.instances += 1
        if number is None:
            report.damaged.append(
                {
                    "sop_instance_uid": uid,
                    "reason": "node never registered "
                    "(it ran without [store] backend = s3): not in the bucket",
                }
            )
            continue  # fmt: skip
        location = (pack | int(number) << NUMBER_SHIFT, offset, length)
        try:
            report.bytes += _check(store, location, deep)
            report.checked += 1
        except DuckpacsError as e:
            if NOT_UPLOADED in str(e):
                report.not_in_bucket += 1
            else:
                report.damaged.append({"sop_instance_uid": uid, "reason": str(e)})
        if progress is not None:
            progress(length)
    return list(reports.values())


def _check(store: Any, location: tuple[int, int, int], deep: bool) -> int:
    """Reads the instance at ``location``; returns its size. Deep: rebuilt whole, every
    chunk and the SHA-256 checked (the stream raises at its end on a mismatch)."""
    if not deep:
        store.sha256(location)
        return 0
    size = 0
    for piece in store.open_instance(location):
        size += len(piece)
    return size
