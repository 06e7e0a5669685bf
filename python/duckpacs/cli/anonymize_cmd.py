"""``duckpacs anonymize IN... --out DIR``: de-identify Part 10 files (PS3.15 Annex E)."""

from __future__ import annotations

import argparse

from duckpacs.cli.context import print_json
from duckpacs.errors import ConfigError
from duckpacs.export.anonymize import Anonymizer, anonymize_files
from duckpacs.files.progress import Progress, write_report


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "anonymize",
        parents=[common],
        help="de-identify DICOM files with the PS3.15 Basic Profile into a folder",
        description="Apply the PS3.15 Annex E Basic Application Level Confidentiality "
        "Profile to every DICOM instance found in IN (files, folders, zips, .gz, DICOMDIR) "
        "and write the results to DIR/<new study UID>/<new instance UID>.dcm. UIDs are "
        "replaced consistently across the run, private attributes are removed, and the "
        "summary says what was removed or changed. The archive is not touched.",
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="files or folders to de-identify")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--secret",
        metavar="TEXT",
        help="key for UID remapping and pseudonyms: the same key gives the same new UIDs "
        "(default: random, so runs cannot be linked)",
    )
    p.add_argument("--patient-id", metavar="ID", help="Patient ID to write (default: pseudonym)")
    p.add_argument("--patient-name", metavar="NAME", help="Patient Name to write")
    p.add_argument("--report", metavar="FILE.json", help="write the full report to a file")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=cmd_anonymize)


def cmd_anonymize(args: argparse.Namespace) -> int:
    if args.secret is not None and not args.secret:
        raise ConfigError("--secret must not be empty")
    anonymizer = Anonymizer(
        secret=args.secret.encode() if args.secret else None,
        patient_id=args.patient_id,
        patient_name=args.patient_name,
    )
    progress = Progress("anonymize")
    report = anonymize_files(args.inputs, args.out, anonymizer, progress=progress)
    if args.report:
        write_report(args.report, progress.summary, extra=report.as_json())
    if args.json:
        print_json(report.as_json())
    else:
        print(progress.summary.line())
        print(f"{len(report.written)} written to {args.out}, {len(report.rejected)} rejected")
        for line, count in report.removed_summary().items():
            print(f"  {count:6d}  {line}")
        for r in report.rejected:
            print(f"rejected: {r.path}: {r.reason}")
    return 0 if report.written or not report.rejected else 1
