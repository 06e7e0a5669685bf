"""``duckpacs cluster move-to``: an embedded archive becomes a node of the shared one.

The user points the data folder's ``duckpacs.toml`` at the shared archive (``[index]
backend = "postgres"``, ``[store] backend = "s3"``, ``index.node``), then runs this once;
it is safe to interrupt and run again:

1. **index**: opening the archive indexes its store into PostgreSQL under this node's
   name (the path every archive switched to PostgreSQL takes at its first start), and
   registers the node's number;
2. **upload**: the open pack is sealed and every pack uploaded to
   ``<prefix>/<node>/``; each confirmed upload is recorded in ``store/packs/uploads.log``,
   so a second run uploads only what the first did not confirm;
3. **verify**: the number of live instances in the store, of this node's rows in
   PostgreSQL and of the embedded index it leaves behind (``index.duckdb``, when there is
   one) must agree, and every instance is read back *from the bucket* and its SHA-256
   compared with the one computed when it arrived (:mod:`.verify`, deep).

The data folder stays this node's: its packs remain on its disk, and ``serve`` keeps
uploading what arrives from now on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duckpacs.cluster.verify import NodeReport, verify_shared
from duckpacs.config import Settings
from duckpacs.errors import ConfigError, StorageError

STEP_BYTES = 64 << 20

NEEDS = (
    'cluster move-to needs the shared archive in duckpacs.toml: [index] backend = "postgres" '
    'and [store] backend = "s3" (see docs/CLUSTER.md)'
)


@dataclass
class MoveReport:
    node: str
    number: int = 0
    uploaded_packs: int = 0
    uploaded_bytes: int = 0
    in_store: int = 0
    in_index: int = 0
    in_embedded_index: int | None = None
    verified: NodeReport | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "number": self.number,
            "uploaded_packs": self.uploaded_packs,
            "uploaded_bytes": self.uploaded_bytes,
            "instances": {
                "store": self.in_store,
                "index": self.in_index,
                "embedded_index": self.in_embedded_index,
            },
            "verified": self.verified.as_json() if self.verified else None,
            "complete": self.complete,
            "problems": self.problems,
        }


def embedded_count(data_dir: Path) -> int | None:
    """Instances in the embedded index the archive had before (None: there is none)."""
    import duckdb

    path = data_dir / "index.duckdb"
    if not path.exists():
        return None
    con = duckdb.connect(str(path), read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM instances").fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


def upload_all(store: Any, on_step: Callable[[dict[str, Any]], None]) -> tuple[int, int]:
    """Seal, then upload until nothing is pending; (packs, bytes) uploaded by this run."""
    store.seal()
    packs = total = 0
    while True:
        rep = dict(store.upload_step(STEP_BYTES))
        packs += int(rep["uploaded"])
        total += int(rep["bytes"])
        on_step(rep)
        if rep["error"]:
            raise StorageError(
                f"upload stopped: {rep['error']} ({packs} packs uploaded by this run; run "
                "`duckpacs cluster move-to` again to go on)"
            )
        if int(rep["pending_packs"]) == 0:
            return packs, total


def move_to(
    s: Settings,
    *,
    on_upload: Callable[[dict[str, Any]], None],
    on_verify: Callable[[int], None],
) -> MoveReport:
    """Index, upload and verify this data folder as a node of the shared archive."""
    from duckpacs import store_config
    from duckpacs.archive import layout
    from duckpacs.archive.facade import Archive
    from duckpacs.index import backend

    if s["index.backend"] != "postgres" or store_config.configured() is None:
        raise ConfigError(NEEDS)
    node = backend.node()
    report = MoveReport(node)
    report.in_embedded_index = embedded_count(s.data_dir)
    archive = Archive.open(s.data_dir, on_conflict=s["archive.on_conflict"])
    try:
        store = archive.store_backend
        report.uploaded_packs, report.uploaded_bytes = upload_all(store, on_upload)
        report.in_store = sum(1 for _ in store.scan())
        shared: Any = archive.index  # the PostgreSQL index (checked above)
        report.number = int(shared.node_number())
    finally:
        archive.close()
    with backend.open_index(s.data_dir, read_only=True) as index:
        report.in_index = _node_rows(index, node)
        store = layout.open_store(s.data_dir)
        try:
            found = verify_shared(index, store, deep=True, node=node, progress=on_verify)
        finally:
            store.close()
    report.verified = found[0] if found else NodeReport(node, report.number)
    _judge(report)
    return report


def _node_rows(index: Any, node: str) -> int:
    """This node's instances in the shared index (its row of the node listing)."""
    return next((int(n["instances"]) for n in index.nodes() if n["name"] == node), 0)


def _judge(r: MoveReport) -> None:
    """What keeps the move from being complete, in words a user can act on."""
    if r.in_index != r.in_store:
        r.problems.append(f"{r.in_store} instances in the store but {r.in_index} in the index")
    if r.in_embedded_index is not None and r.in_embedded_index != r.in_index:
        r.problems.append(f"the embedded index listed {r.in_embedded_index} instances, the "
                          f"shared one {r.in_index}")  # fmt: skip
    v = r.verified
    assert v is not None
    if v.not_in_bucket:
        r.problems.append(f"{v.not_in_bucket} instances not in the bucket")
    if v.damaged:
        r.problems.append(f"{len(v.damaged)} instances unreadable from the bucket, first: "
                          f"{v.damaged[0]['reason']}")  # fmt: skip
    if v.checked != r.in_index:
        r.problems.append(f"{v.checked} of {r.in_index} instances read back from the bucket")
