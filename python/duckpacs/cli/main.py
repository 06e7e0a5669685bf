"""Entry point of the ``duckpacs`` command: builds the parser and turns errors into one line.

Each subcommand lives in a module of this package exposing ``register(subparsers, common)``;
the module sets ``func`` on its parser, called with the parsed arguments. Errors derived from
:class:`~duckpacs.errors.DuckpacsError` become ``duckpacs: error: <message>`` and the error's
exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from duckpacs.errors import DuckpacsError

# Each module of this package that registers commands, with their summaries in `--help`.
# Only the module of the command being run is imported, so a command loads only what it runs:
# `version` and `dump` start at once instead of loading DuckDB, pydicom, pynetdicom and the web
# stack first, and a worker process started by `serve` (multiprocessing's spawn imports the
# main module again) does not load every command's dependencies. tests/test_cli_startup.py
# checks that this table and the modules' own registrations agree.
COMMAND_MODULES: dict[str, dict[str, str]] = {
    "config_cmds": {
        "init": "create an archive folder with a commented default configuration",
        "version": "print duckpacs, Python and Rust versions and the build profile",
        "config": "inspect the configuration",
    },
    "serve_cmd": {"serve": "run the archive: DIMSE and HTTP"},
    "dump_cmd": {
        "dump": "print the elements of a DICOM file (or its DICOM JSON model with --json)",
    },
    "store_cmds": {
        "verify": "check every stored checksum; exits 1 and lists damaged instances by UID",
        "stats": "instances, raw and stored bytes, compression ratio",
        "compact": "rewrite packs to reclaim the space of deleted instances (crash-safe); "
        "with --densify, first rewrite what is still in the arrival encoding in the dense one",
    },
    "find_cmd": {"find": "query the index (C-FIND matching rules)"},
    "sql_cmd": {"sql": "read-only SQL over the index (CSV/JSON/Parquet output)"},
    "echo_cmd": {"echo": "send a C-ECHO to a peer (name, AE title or AE@host:port)"},
    "send_cmd": {
        "send": "send stored instances matching a query to a peer (through the queue)",
    },
    "queue_cmd": {
        "queue": "the forwarding queue: per destination what waits and what failed; retry, drop",
    },
    "delete_cmd": {
        "delete": "move studies, series or instances to the trash (lists them without --yes)",
        "trash": "list or restore deleted instances",
    },
    "modify_cmd": {
        "modify": "correct a study's patient or study data (lists the change without --yes)",
        "merge-patient": "move every study of one Patient ID to another (lists them without --yes)",
    },
    "protect_cmd": {
        "protect": "protect a study from recycling and retention (--list shows them)",
        "unprotect": "lift a study's protection",
    },
    "worklist_cmd": {"worklist": "Modality Worklist entries"},
    "backup_cmd": {
        "backup": "copy the archive into a backup folder while it runs (again: only what is new)",
        "restore": "make a data folder from a backup folder (index rebuilt)",
    },
    "reindex_cmd": {
        "reindex": "rebuild the index from the store (after loss or damage of index.duckdb)",
    },
    "user_cmds": {"user": "manage web and DICOMweb users"},
    "anonymize_cmd": {
        "anonymize": "de-identify DICOM files with the PS3.15 Basic Profile into a folder",
    },
    "dicomdir_cmd": {
        "dicomdir": "write DICOM files as CD/DVD media with a DICOMDIR (e.g. a patient CD)",
    },
    "scans_cmd": {
        "import-scans": "store scanned film/paper images listed in a CSV manifest as DICOM "
        "instances",
    },
    "migrate_cmd": {
        "migrate": "copy every study of a legacy PACS into the archive (C-FIND by date windows "
        "and by patient, C-GET or C-MOVE per study, every instance checked)",
    },
    "import_cmd": {
        "import": "import DICOM files, folders, zips, .gz files and DICOMDIR media into the "
        "archive",
    },
    "export_cmd": {
        "export": "write archived instances matching a query as DICOM files (zip, DICOMDIR)",
    },
    "cluster": {
        "cluster": "a shared archive's nodes (PostgreSQL, S3): status, move-to, verify",
    },
}
# command -> (its module, its summary)
COMMANDS = {
    name: (f"duckpacs.cli.{module}", summary)
    for module, commands in COMMAND_MODULES.items()
    for name, summary in commands.items()
}


def common_options(*, top_level: bool) -> argparse.ArgumentParser:
    """Options every subcommand accepts, before or after the subcommand's name.

    Below the top level the defaults are suppressed, so that `duckpacs --debug serve` is not
    undone by the subcommand parser writing its own default over the top level's value.
    """
    default: dict[str, Any] = {} if top_level else {"default": argparse.SUPPRESS}
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("archive")
    group.add_argument(
        "--data",
        metavar="DIR",
        help="archive folder (else $DUCKPACS_DATA_DIR, "
        "else the configuration, else ./duckpacs-data)",
        **default,
    )
    group.add_argument(
        "--config",
        metavar="FILE",
        help="configuration file (else "
        "$DUCKPACS_CONFIG, else ./duckpacs.toml, else DIR/duckpacs.toml)",
        **default,
    )
    group.add_argument("--debug", action="store_true", help="show tracebacks on error", **default)
    return common


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with ``command``'s module registered in full, the other commands as bare
    names with their summary; with every module registered when ``command`` is None."""
    modules = [m for m, _ in COMMANDS.values()] if command is None else [COMMANDS[command][0]]
    return _parser(dict.fromkeys(modules))


def _parser(modules: Iterable[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duckpacs",
        description="A self-contained DICOM archive. Run `duckpacs COMMAND --help` for details.",
        parents=[common_options(top_level=True)],
    )
    common = common_options(top_level=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in modules:
        importlib.import_module(module).register(subparsers, common)
    for name, (_, summary) in COMMANDS.items():
        if name not in subparsers.choices:
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, parsed in two steps: the top level alone finds the command (and answers
    `duckpacs --help`, a missing or unknown command), then the command's own parser."""
    outline, _ = _parser(()).parse_known_args(argv)
    return build_parser(outline.command).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        result = args.func(args)
        return int(result or 0)
    except DuckpacsError as e:
        if args.debug:
            raise
        print(f"duckpacs: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("duckpacs: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if args.debug:
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"duckpacs: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
