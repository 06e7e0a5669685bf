"""``duckpacs backup --to DIR`` and ``duckpacs restore --from DIR --data NEWDIR``.

backup: a consistent copy of the archive while ``duckpacs serve`` keeps receiving (or with
no server running): the store's packs up to their last whole record, the store's journals
(the trash), users, the configuration, the audit log and the SQLite databases (queue,
protections, worklist). Run it again into the same DIR and it copies only what is new. A
backup killed halfway leaves the previous complete one in DIR restorable. The index is not
copied: restore rebuilds it from the store (tens of thousands of instances a second).

restore: the last complete backup in DIR as a new data folder, index rebuilt; check it with
``duckpacs verify --deep --data NEWDIR``. A non-empty NEWDIR is refused unless --force,
which moves it aside (NEWDIR.replaced-<time>) first.

Progress (MB/s, ETA) is drawn on stderr when it is a terminal; --json prints the summary.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from duckpacs.cli.context import print_json, settings
from duckpacs.errors import ConfigError

MB = 1_000_000


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    b = subparsers.add_parser(
        "backup", parents=[common],
        help="copy the archive into a backup folder while it runs (again: only what is new)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    b.add_argument("--to", required=True, metavar="DIR", type=Path, help="backup folder")
    b.add_argument("--json", action="store_true", help="print the summary as JSON")
    b.set_defaults(func=cmd_backup)
    r = subparsers.add_parser(
        "restore", parents=[common],
        help="make a data folder from a backup folder (index rebuilt)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    r.add_argument("--from", dest="source", required=True, metavar="DIR", type=Path,
                   help="backup folder (written by duckpacs backup)")  # fmt: skip
    r.add_argument(
        "--force", action="store_true",
        help="restore even into a non-empty --data folder, after moving it aside",
    )  # fmt: skip
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.set_defaults(func=cmd_restore)


class _Meter:
    """One status line on stderr, redrawn at most 4 times a second (terminals only)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.show = sys.stderr.isatty()
        self.started = time.monotonic()
        self.drawn = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.show or (now - self.drawn < 0.25 and done < total):
            return
        self.drawn = now
        elapsed = max(now - self.started, 1e-6)
        rate = done / MB / elapsed
        left = (total - done) / MB / rate if rate > 0 else 0.0
        share = 100 * done // total if total else 100
        sys.stderr.write(
            f"\r{self.label} {done / MB:,.1f} of {total / MB:,.1f} MB {share}% | "
            f"{rate:,.1f} MB/s | ETA {int(left) // 60}:{int(left) % 60:02d}  "
        )
        sys.stderr.flush()

    def end(self) -> None:
        if self.show:
            sys.stderr.write("\n")


def cmd_backup(args: argparse.Namespace) -> int:
    from duckpacs.backup.take import take

    meter = _Meter("backup")
    try:
        summary = take(settings(args), args.to, progress=meter)
    finally:
        meter.end()
    if args.json:
        print_json(summary)
        return 0
    print(_backup_line(summary))
    return 0


def _backup_line(s: dict[str, Any]) -> str:
    return (
        f"backup {s['generation']} complete in {s['destination']}: "
        f"{s['bytes_copied'] / MB:,.1f} MB copied of {s['bytes_total'] / MB:,.1f} MB in "
        f"{s['packs']} packs ({s['new_packs']} new, "
        f"{s['grown_packs']} grown, {s['removed_packs']} removed), {s['seconds']} s, "
        f"{s['mb_per_second']} MB/s"
    )


def cmd_restore(args: argparse.Namespace) -> int:
    from duckpacs.backup.restore import restore

    if not getattr(args, "data", None):
        raise ConfigError("restore needs --data NEWDIR: the folder to restore into")
    meter = _Meter("restore")
    try:
        summary = restore(args.source, settings(args).data_dir, force=args.force, progress=meter)
    finally:
        meter.end()
    if args.json:
        print_json(summary)
        return 0
    if summary["moved_aside"]:
        print(f"what {summary['data']} held is now in {summary['moved_aside']}")
    print(
        f"restored backup {summary['generation']} (taken {summary['backup_started_at']}) into "
        f"{summary['data']}: {summary['instances']:,} instances in {summary['studies']:,} "
        f"studies, {summary['bytes'] / MB:,.1f} MB, {summary['seconds']} s; "
        f"check it with: duckpacs verify --deep --data {summary['data']}"
    )
    return 0
