"""``duckpacs dicomdir IN... --out DIR``: lay DICOM files out as media with a DICOMDIR."""

from __future__ import annotations

import argparse

from duckpacs.cli.context import print_json
from duckpacs.export.dicomdir import PROFILE, write_dicomdir
from duckpacs.files.progress import Progress


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "dicomdir",
        parents=[common],
        help="write DICOM files as CD/DVD media with a DICOMDIR (e.g. a patient CD)",
        description="Copy every DICOM instance found in IN (files, folders, zips, .gz, "
        "DICOMDIR) byte for byte into DIR with ISO 9660-safe names "
        "(PTnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn) and write DIR/DICOMDIR (PS3.10 8, PS3.11 "
        f"{PROFILE}). Burn DIR to a disc as it is. Files not in Explicit VR Little Endian "
        "are kept unchanged and listed as outside the profile.",
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="files or folders to put on the media")
    p.add_argument("--out", required=True, metavar="DIR", help="media root to create (new/empty)")
    p.add_argument(
        "--label", default="DUCKPACS", help="File-set ID / volume label (A-Z 0-9 _, <=16)"
    )
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=cmd_dicomdir)


def cmd_dicomdir(args: argparse.Namespace) -> int:
    progress = Progress("dicomdir")
    result = write_dicomdir(args.inputs, args.out, file_set_id=args.label, progress=progress)
    if args.json:
        print_json(result.as_json())
        return 0
    print(progress.summary.line())
    print(f"wrote {result.dicomdir} listing {len(result.files)} instances")
    if result.outside_profile:
        print(
            f"{len(result.outside_profile)} files are not Explicit VR Little Endian "
            f"(kept as archived; the media is not strictly {PROFILE})"
        )
    if result.invented:
        print(
            f"{len(result.invented)} empty Type 1 record keys got invented values in the "
            "DICOMDIR (files unchanged); --json lists them"
        )
    for r in result.rejected:
        print(f"rejected: {r.path}: {r.reason}")
    return 0
