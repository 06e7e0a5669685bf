"""``duckpacs import PATH...``: bulk import of folders, files, zips, .gz and DICOMDIR media.

Everything found by content (PS3.10 7.1 preamble and ``DICM``, or a plausible bare dataset)
is stored in the archive's store and indexed in bulk batches; see
:mod:`duckpacs.ingest.importer` for the ordering that makes a rerun resume safely.
"""

from __future__ import annotations

import argparse
import os

from duckpacs.cli.context import print_json, settings
from duckpacs.files.progress import Progress, write_report
from duckpacs.ingest.importer import import_paths


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "import",
        parents=[common],
        help="import DICOM files, folders, zips, .gz files and DICOMDIR media into the archive",
        description="Find DICOM instances by content below each PATH (any or no extension; "
        "zip members; gzip files; DICOMDIR directory records), store them and index them. "
        "Idempotent: instances already archived with the same bytes are skipped, inputs "
        "unchanged since the last import are not even read. An interrupted import resumes "
        "when rerun. Non-DICOM and broken inputs are reported, never stored.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to import")
    p.add_argument(
        "--jobs",
        type=int,
        default=max(2, os.cpu_count() or 2),
        metavar="N",
        help="reader threads (default: number of CPUs)",
    )
    p.add_argument("--report", metavar="FILE.json", help="write totals and every rejected input")
    p.add_argument(
        "--rescan",
        action="store_true",
        help="read every input even if the journal says it was imported unchanged",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another process writing the archive (default: fail at once)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    s = settings(args)
    progress = Progress("import")
    summary, counts = import_paths(
        args.paths,
        s.data_dir,
        progress=progress,
        jobs=max(1, args.jobs),
        use_journal=not args.rescan,
        wait=args.wait,
    )
    if args.report:
        write_report(args.report, summary, extra=counts.as_json())
    if args.json:
        rejected = [{"path": r.path, "reason": r.reason} for r in summary.rejected]
        print_json({**summary.as_json(), **counts.as_json(), "rejected": rejected})
        return 0
    print(summary.line())
    recovered = counts.reconciled
    print(
        f"stored {counts.stored:,}, already archived {counts.already:,}, unchanged inputs "
        f"skipped {counts.journal_skipped:,}, conflicts {counts.conflicts:,}"
        + (f", recovered {recovered:,} from an interrupted run" if recovered else "")
    )
    for r in summary.rejected[:20]:
        print(f"rejected: {r.path}: {r.reason}")
    if len(summary.rejected) > 20:
        print(f"... {len(summary.rejected) - 20} more (see --report)")
    return 0
