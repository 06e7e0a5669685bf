"""``duckpacs cluster``: the nodes of an archive shared through the PostgreSQL index.

``status`` lists them; ``move-to`` makes this embedded archive one of them
(:mod:`duckpacs.cluster.move`); ``verify`` reads every node's instances back from the
bucket (:mod:`duckpacs.cluster.verify`).

``status``:
One line per node the index knows: its number (the one in the pack ids other nodes read
from S3), when it last reported (its heartbeat), the instances it holds, the sealed packs it
has not uploaded yet and its read cache's use, as its last heartbeat gave them. A node that
holds instances but never registered (it ran without ``[store] backend = "s3"``) is listed
without a number. Read from the index only: it works from any node, running or not.
"""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from duckpacs.cli.context import print_json, settings
from duckpacs.config import Settings
from duckpacs.errors import ConfigError

NOT_SHARED = (
    'cluster status needs the shared PostgreSQL index ([index] backend = "postgres"); '
    "this archive's index is the embedded one, so it has one node"
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "cluster",
        parents=[common],
        help="a shared archive's nodes (PostgreSQL, S3): status, move-to, verify",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser(
        "status",
        parents=[common],
        help="nodes seen: number, last heartbeat, instances, uploads pending, cache use",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
    move = actions.add_parser(
        "move-to",
        parents=[common],
        help="make this embedded archive a node of the shared one its duckpacs.toml names: "
        "index it in PostgreSQL, upload its packs, verify by count and SHA-256 (resumable)",
    )
    move.add_argument("--json", action="store_true", help="machine-readable report")
    move.set_defaults(func=cmd_move_to)
    verify = actions.add_parser(
        "verify",
        parents=[common],
        help="read every indexed instance back from the bucket, as any node would",
    )
    verify.add_argument("--deep", action="store_true",
                        help="rebuild each instance and compare its SHA-256")  # fmt: skip
    verify.add_argument("--node", help="only this node's instances")
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.set_defaults(func=cmd_verify)


def _shared(s: Settings) -> None:
    if s["index.backend"] != "postgres":
        raise ConfigError(NOT_SHARED)


def cmd_move_to(args: argparse.Namespace) -> int:
    from duckpacs.cluster.move import move_to
    from duckpacs.files.progress import Progress

    s = settings(args)
    uploads = Progress("upload", enabled=None if not args.json else False)
    checks = Progress("verify", enabled=None if not args.json else False)

    def on_upload(rep: dict[str, Any]) -> None:
        if uploads.total_bytes is None:
            uploads.total_bytes = int(rep["pending_bytes"]) + int(rep["bytes"])
        uploads.advance(int(rep["bytes"]), files=int(rep["uploaded"]))

    report = move_to(s, on_upload=on_upload, on_verify=lambda n: checks.advance(n))
    up, ve = uploads.finish(), checks.finish()
    if args.json:
        print_json(report.as_json())
    else:
        print(f"node {report.node} (number {report.number}): {up.line()}")
        print(f"instances: {report.in_store:,} in the store, {report.in_index:,} in the index"
              + ("" if report.in_embedded_index is None
                 else f", {report.in_embedded_index:,} in the embedded index"))  # fmt: skip
        print(ve.line())
        for problem in report.problems:
            print(f"NOT COMPLETE: {problem}")
        if report.complete:
            print("complete: every instance is in the shared index and read back from the "
                  "bucket with its SHA-256")  # fmt: skip
    return 0 if report.complete else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from duckpacs.archive import layout
    from duckpacs.cluster.verify import verify_shared
    from duckpacs.files.progress import Progress
    from duckpacs.index import backend

    s = settings(args)
    _shared(s)
    if s["store.backend"] != "s3":
        raise ConfigError('cluster verify reads the packs from the bucket: it needs '
                          '[store] backend = "s3"')  # fmt: skip
    checks = Progress("verify", enabled=None if not args.json else False)
    with backend.open_index(s.data_dir, read_only=True) as index:
        store = layout.open_store(s.data_dir)
        try:
            reports = verify_shared(index, store, deep=args.deep, node=args.node,
                                    progress=lambda n: checks.advance(n))  # fmt: skip
        finally:
            store.close()
    summary = checks.finish()
    bad = sum(len(r.damaged) for r in reports)
    absent = sum(r.not_in_bucket for r in reports)
    if args.json:
        print_json({"deep": args.deep, "nodes": [r.as_json() for r in reports],
                    "damaged": bad, "not_in_bucket": absent})  # fmt: skip
    else:
        for r in reports:
            print(f"{r.name}: {r.checked:,} of {r.instances:,} instances read from the "
                  f"bucket, {r.not_in_bucket:,} not in it, {len(r.damaged):,} damaged")  # fmt: skip
            for d in r.damaged[:20]:
                print(f"  {d['sop_instance_uid']}: {d['reason']}")
        print(summary.line())
    # 1: damage; 2: instances whose packs are not in the bucket (yet): run again later.
    return 1 if bad else 2 if absent else 0


def cmd_status(args: argparse.Namespace) -> int:
    s = settings(args)
    _shared(s)
    from duckpacs.index import backend
    from duckpacs.index.pg.db import PgIndex

    with backend.open_index(s.data_dir, read_only=True) as index:
        assert isinstance(index, PgIndex)  # index.backend = postgres
        nodes = index.nodes()
    report = {"index": _index(s, backend.node()), "store": _store(s), "nodes": nodes}
    if args.json:
        print_json(_jsonable(report))
    else:
        _print(report)
    return 0


def _index(s: Settings, node: str) -> dict[str, Any]:
    # The connection string holds no password (config refuses one); options are left out.
    return {"backend": "postgres", "dsn": s["index.dsn"].split("?")[0], "node": node}


def _store(s: Settings) -> dict[str, Any]:
    """This node's store settings as they may be shown (never the credentials)."""
    if s["store.backend"] != "s3":
        return {"backend": "local"}
    keys = ("endpoint", "bucket", "prefix", "region")
    return {"backend": "s3", **{k: s[f"store.{k}"] for k in keys}}


def _jsonable(report: dict[str, Any]) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime.datetime) else value

    nodes = [{k: plain(v) for k, v in node.items()} for node in report["nodes"]]
    return {**report, "nodes": nodes}


def _print(report: dict[str, Any]) -> None:
    index, store = report["index"], report["store"]
    print(f"index: PostgreSQL {index['dsn']} (this node: {index['node']})")
    if store["backend"] == "s3":
        print(f"store: S3 {store['endpoint']} bucket {store['bucket']}, "
              f"prefix {store['prefix']}/")  # fmt: skip
    else:
        print("store: local (each node's packs in its own data folder)")
    nodes = report["nodes"]
    if not nodes:
        print("no node has registered or stored an instance yet")
        return
    header = ("NODE", "NUMBER", "LAST SEEN", "INSTANCES", "UPLOADS PENDING", "CACHE")
    rows = [header, *(_row(n) for n in nodes)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def _row(node: dict[str, Any]) -> tuple[str, ...]:
    number = "-" if node["number"] is None else str(node["number"])
    if node["pending_packs"] is None:
        pending = "-"
    else:
        pending = f"{node['pending_packs']} packs, {_bytes(node['pending_bytes'] or 0)}"
    cache = "-"
    if node["cache_bytes"] is not None:
        cache = f"{_bytes(node['cache_bytes'])} of {_bytes(node['cache_limit'] or 0)}"
    return (node["name"] or "(unnamed)", number, _age(node["seen_seconds_ago"]),
            f"{node['instances']:,}", pending, cache)  # fmt: skip


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
