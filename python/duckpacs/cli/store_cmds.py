"""``duckpacs verify``, ``duckpacs stats`` and ``duckpacs compact``: the store's maintenance.

They act on ``<data>/store`` of the archive the configuration resolves to. The on-disk format
they check is described in docs/STORAGE-FORMAT.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from duckpacs import _core
from duckpacs.archive import layout, recovery
from duckpacs.archive.corrections import Corrections
from duckpacs.archive.trash import Trash, purge_expired
from duckpacs.cli.context import print_json, settings
from duckpacs.errors import ArchiveLockedError, StorageError
from duckpacs.index.base import IndexBackend

# Writer id reserved for maintenance commands (the server's workers use small ids).


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
        help="rewrite packs to reclaim the space of deleted instances (crash-safe); with "
        "--densify, first rewrite what is still in the arrival encoding in the dense one",
    )
    p.add_argument(
        "--densify",
        action="store_true",
        help="re-encode instances still in the fast arrival encoding in the dense one now "
        "(`duckpacs serve` does it by itself when idle)",
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


def data_with_store(args: argparse.Namespace) -> Path:
    """The configured archive's data folder; its store must exist."""
    data = settings(args).data_dir
    path = layout.store_dir(data)
    if not path.is_dir():
        raise StorageError(f"{path}: no store here (has the archive received anything yet?)")
    return data


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
    with layout.open_store(data_with_store(args)) as store:
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
    with layout.open_store(data_with_store(args)) as store:
        s: dict[str, Any] = dict(store.stats())
    stored = s["stored_bytes"] + s["dictionary_bytes"]
    s["ratio"] = _ratio(s["raw_bytes"], stored)
    s["header_ratio"] = _ratio(s["header_raw_bytes"], s["header_stored_bytes"])
    s["pixel_ratio"] = _ratio(s["pixel_raw_bytes"], s["pixel_stored_bytes"])
    # At rest: the instances already in the dense encoding (dictionaries included).
    dense_raw = s["raw_bytes"] - s["arrival_raw_bytes"]
    dense_stored = s["stored_bytes"] - s["arrival_stored_bytes"] + s["dictionary_bytes"]
    s["ratio_at_rest"] = _ratio(dense_raw, dense_stored) if dense_raw else 0.0
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
    print(
        f"arrival        {s['arrival_instances']} instances, {_size(s['arrival_raw_bytes'])} -> "
        f"{_size(s['arrival_stored_bytes'])} still in the fast arrival encoding"
        + ("  (densified when `duckpacs serve` is idle)" if s["arrival_instances"] else "")
    )
    print(f"at rest        ratio {s['ratio_at_rest']}x  (instances in the dense encoding)")
    print(f"dictionaries   {s['dictionaries']}  ({_size(s['dictionary_bytes'])})")
    print(f"packs          {s['packs']}  ({_size(s['pack_bytes'])} on disk)")
    print(f"dead bytes     {_size(s['dead_bytes'])}  (reclaimed by `duckpacs compact`)")
    return 0


def _open_index_for_compaction(data_dir: Path, on_conflict: str) -> IndexBackend:
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


def _densify(store: _core.Store, index: IndexBackend) -> dict[str, Any]:
    """Densifies everything now, a victim pack per step on every core; the index follows
    each pack's moves before its records count as indexed."""
    done: dict[str, Any] = {"packs": 0, "densified": 0, "bytes_in": 0, "bytes_out": 0,
                            "moved": 0, "index_updated": 0, "skipped": []}  # fmt: skip
    show = _progress("densify")
    while True:
        step = store.densify_step(budget=1 << 62, threads=os.cpu_count() or 1)
        done["index_updated"] += index.relocate(step["moved"])
        store.settle(step["settle"])
        for key in ("packs", "densified", "bytes_in", "bytes_out"):
            done[key] += step[key]
        done["moved"] += len(step["moved"])
        done["skipped"] += [{"pack": p, "reason": r} for p, r in step["skipped"]]
        if show is not None and (step["packs"] or step["done"]):
            show(done["bytes_in"], done["bytes_in"] + step["pending_bytes"])
        if step["done"] or not (step["bytes_in"] or step["scanned"] or step["packs"]):
            break
    # The densified packs are applied: the next opening need not read them again.
    index.advance_marks(store.low_water())
    return done


def cmd_compact(args: argparse.Namespace) -> int:
    """Rewrites sealed packs; the moves are printed (``--json``) for the index to follow."""
    s = settings(args)
    data = data_with_store(args)
    with _open_index_for_compaction(s.data_dir, s["archive.on_conflict"]) as index:
        with layout.open_store(data, writer_id=layout.MAINTENANCE_WRITER) as store:
            bin_ = Trash(s.data_dir)
            history = Corrections(s.data_dir).history()
            purged = purge_expired(bin_, store, s["archive.trash_days"], history.older)
            # What corrections superseded is the instances' history, not an orphan copy.
            kept = bin_.hidden_keys() | set(history.successor)
            orphans = recovery.orphan_copies(index, store, kept)
            for location in orphans:
                store.delete(location)
            densified = _densify(store, index) if args.densify else None
            report = store.compact(min_dead_ratio=args.min_dead, progress=_progress("compact"))
        report["orphan_copies"] = len(orphans)
        report["trash_purged"] = purged
        # The store has already committed the move; the index follows it at once so that
        # every indexed location stays readable (a kill in between is repaired by the next
        # opening for writing: duckpacs.archive.recovery re-points the rows).
        report["index_updated"] = index.relocate(report["moved"])
    if densified is not None:
        report["densify"] = densified
    if args.json:
        print_json(report)
        return 0
    if densified is not None:
        print(
            f"densified {densified['densified']} instance(s) in {densified['packs']} pack(s): "
            f"{_size(densified['bytes_in'])} -> {_size(densified['bytes_out'])}"
        )
        for skip in densified["skipped"]:
            print(f"left pack {skip['pack']} as it is: {skip['reason']}")
    saved = report["bytes_before"] - report["bytes_after"]
    print(
        f"rewrote {report['packs_rewritten']} pack(s), moved {len(report['moved'])} "
        f"instance(s), reclaimed {_size(saved)}"
    )
    if purged["instances"]:
        print(
            f"emptied {purged['batches']} trash batch(es) older than "
            f"{s['archive.trash_days']} days: {purged['instances']} instance(s)"
        )
    if orphans:
        print(f"deleted {len(orphans)} orphan copies (a second record of an archived instance)")
    return 0
