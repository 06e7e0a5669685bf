"""``duckpacs verify``, ``duckpacs stats`` and ``duckpacs compact``: the store's maintenance.

They act on ``<data>/store`` of the archive the configuration resolves to. The on-disk format
they check is described in docs/STORAGE-FORMAT.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from duckpacs._core import Store
from duckpacs.archive import recovery
from duckpacs.cli.context import print_json, settings
from duckpacs.errors import ArchiveLockedError, StorageError
from duckpacs.index import Index

# Writer id reserved for maintenance commands (the server's workers use small ids).
MAINTENANCE_WRITER = 0xFFFF


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "verify",
        parents=[common],
        help="check every stored checksum; exits 1 and lists damaged instances by UID",
    )
    p.add_argument(
        "--deep",
        action="store_true",
        help="also rebuild every instance and compare it with its SHA-256",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_verify)

    p = subparsers.add_parser(
        "stats", parents=[common], help="instances, raw and stored bytes, compression ratio"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_stats)

    p = subparsers.add_parser(
        "compact",
        parents=[common],
        help="rewrite packs to reclaim the space of deleted instances (crash-safe)",
    )
    p.add_argument(
        "--min-dead",
        type=float,
        default=0.2,
        metavar="RATIO",
        help="rewrite a pack when at least this share of it is dead (default 0.2)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_compact)


def store_dir(args: argparse.Namespace) -> Path:
    """``<data>/store`` of the configured archive; it must exist."""
    path = settings(args).data_dir / "store"
    if not path.is_dir():
        raise StorageError(f"{path}: no store here (has the archive received anything yet?)")
    return path


def _progress(label: str) -> Callable[[int, int], None] | None:
    """A progress callback that redraws one line on a terminal, or None when not a terminal."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        share = 100 * done / total if total else 100.0
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{label}: {share:5.1f}% ({_size(done)} of {_size(total)}){end}")
        sys.stderr.flush()

    return show


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def cmd_verify(args: argparse.Namespace) -> int:
    """Checks every chunk checksum (PS3.5 says nothing here: this is our own format)."""
    with Store(store_dir(args)) as store:
        report = store.verify(deep=args.deep, progress=_progress("verify"))
    damaged = report["damaged"]
    if args.json:
        print_json({**report, "deep": args.deep, "ok": not damaged})
    else:
        kind = "deep" if args.deep else "checksum"
        print(
            f"{kind} verify: {report['instances']} instances in {report['records']} records, "
            f"{report['packs']} packs, {_size(report['bytes'])}"
        )
        for d in damaged:
            who = d["sop_instance_uid"] or "(UID unreadable)"
            print(f"DAMAGED {who} in {d['pack_file']} at offset {d['offset']}: {d['message']}")
        print("no damage found" if not damaged else f"{len(damaged)} damaged record(s)")
    return 1 if damaged else 0


def _ratio(raw: int, stored: int) -> float:
    return round(raw / stored, 2) if stored else 0.0


def cmd_stats(args: argparse.Namespace) -> int:
    with Store(store_dir(args)) as store:
        s: dict[str, Any] = dict(store.stats())
    stored = s["stored_bytes"] + s["dictionary_bytes"]
    s["ratio"] = _ratio(s["raw_bytes"], stored)
    s["header_ratio"] = _ratio(s["header_raw_bytes"], s["header_stored_bytes"])
    s["pixel_ratio"] = _ratio(s["pixel_raw_bytes"], s["pixel_stored_bytes"])
    if args.json:
        print_json(s)
        return 0
    print(f"instances      {s['instances']}  (deleted, not compacted: {s['deleted_instances']})")
    print(f"raw bytes      {_size(s['raw_bytes'])}")
    print(f"stored bytes   {_size(stored)}  (ratio {s['ratio']}x, dictionaries included)")
    print(
        f"headers        {_size(s['header_raw_bytes'])} -> {_size(s['header_stored_bytes'])}"
        f"  ({s['header_ratio']}x)"
    )
    print(
        f"pixels         {_size(s['pixel_raw_bytes'])} -> {_size(s['pixel_stored_bytes'])}"
        f"  ({s['pixel_ratio']}x)"
    )
    print(f"dictionaries   {s['dictionaries']}  ({_size(s['dictionary_bytes'])})")
    print(f"packs          {s['packs']}  ({_size(s['pack_bytes'])} on disk)")
    print(f"dead bytes     {_size(s['dead_bytes'])}  (reclaimed by `duckpacs compact`)")
    return 0


def _open_index_for_compaction(data_dir: Path, on_conflict: str) -> Index:
    """The index, opened for writing (and caught up with the store) before compaction
    starts: compaction moves records, so it must not run while `duckpacs serve` owns the
    index (it could not follow the moves)."""
    try:
        index, _ = recovery.open_for_writing(data_dir, on_conflict=on_conflict)
    except ArchiveLockedError:
        raise ArchiveLockedError(
            "compaction moves stored records and the index must follow them: "
            "stop `duckpacs serve` on this archive first"
        ) from None
    return index


def cmd_compact(args: argparse.Namespace) -> int:
    """Rewrites sealed packs; the moves are printed (``--json``) for the index to follow."""
    s = settings(args)
    path = store_dir(args)
    with _open_index_for_compaction(s.data_dir, s["archive.on_conflict"]) as index:
        with Store(path, writer_id=MAINTENANCE_WRITER) as store:
            orphans = recovery.orphan_copies(index, store)
            for location in orphans:
                store.delete(location)
            report = store.compact(min_dead_ratio=args.min_dead, progress=_progress("compact"))
        report["orphan_copies"] = len(orphans)
        # The store has already committed the move; the index follows it at once so that
        # every indexed location stays readable (a kill in between is repaired by the next
        # opening for writing: duckpacs.archive.recovery re-points the rows).
        report["index_updated"] = index.relocate(report["moved"])
    if args.json:
        print_json(report)
        return 0
    saved = report["bytes_before"] - report["bytes_after"]
    print(
        f"rewrote {report['packs_rewritten']} pack(s), moved {len(report['moved'])} "
        f"instance(s), reclaimed {_size(saved)}"
    )
    if orphans:
        print(f"deleted {len(orphans)} orphan copies (a second record of an archived instance)")
    return 0
