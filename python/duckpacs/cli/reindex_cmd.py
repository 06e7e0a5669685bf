"""``duckpacs reindex``: rebuild ``<data>/index.duckdb`` from the store alone.

The index is a view of the store (docs/INDEX.md): every live record's header is parsed again
with the same Rust builder ingest uses, into a new file that replaces the old one only when
complete. Run it with the archive stopped (the serving process owns the index file).
"""

from __future__ import annotations

import argparse
import sys
import time

from duckpacs.archive import corrections, layout
from duckpacs.cli.context import print_json, settings
from duckpacs.errors import StorageError
from duckpacs.index.bulk import BATCH_RECORDS
from duckpacs.index.reindex import rebuild, store_records


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "reindex",
        parents=[common],
        help="rebuild the index from the store (after loss or damage of index.duckdb)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--batch",
        type=int,
        default=BATCH_RECORDS,
        metavar="N",
        help=f"instances per index batch (default {BATCH_RECORDS:,}; a batch also ends at "
        "256 MB of headers)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_reindex)


def cmd_reindex(args: argparse.Namespace) -> int:
    data = settings(args).data_dir
    store_path = layout.store_dir(data)
    if not store_path.is_dir():
        raise StorageError(f"{store_path}: no store here, nothing to index")
    started = time.monotonic()
    with layout.open_store(data) as store:
        tail = store.tail({}, headers=True)  # every live record, and where each pack ends
        entries = list(tail["instances"])  # the scan is an iterator: read it once
        corrections.finish(data, entries)  # a correction a kill interrupted
        scan = corrections.visible(data, entries)  # the trash and superseded records stay out
        total = len(scan)
        show = sys.stderr.isatty()

        def progress(done: int) -> None:
            if show:
                sys.stderr.write(f"\rindexed {done:,} of {total:,}")
                sys.stderr.flush()

        stats = rebuild(
            data, store_records(scan), batch_size=args.batch, progress=progress,
            marks=tail["ends"],
        )  # fmt: skip
        if show:
            sys.stderr.write("\n")
    stats["seconds"] = round(time.monotonic() - started, 1)  # type: ignore[assignment]
    if args.json:
        print_json(stats)
        return 1 if stats["skipped"] else 0
    print(
        f"reindexed {stats['instances']:,} instances ({stats['studies']:,} studies, "
        f"{stats['patients']:,} patients) in {stats['seconds']} s"
    )
    if stats["skipped"]:
        print(f"{stats['skipped']:,} records could not be parsed (see the log)", file=sys.stderr)
        return 1
    return 0
