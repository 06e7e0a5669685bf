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
from collections.abc import Sequence
from typing import Any

from duckpacs.errors import DuckpacsError

# Subcommand modules, imported when the parser is built rather than with this module: a
# worker process started by `serve` (multiprocessing's spawn) imports the program's main
# module again, and must not load every command's dependencies (DuckDB, pydicom, the web
# stack) for nothing: that cost each worker tens of megabytes.
COMMAND_MODULES = (
    "duckpacs.cli.config_cmds",
    "duckpacs.cli.serve_cmd",
    "duckpacs.cli.dump_cmd",
    "duckpacs.cli.store_cmds",
    "duckpacs.cli.find_cmd",
    "duckpacs.cli.sql_cmd",
    "duckpacs.cli.echo_cmd",
    "duckpacs.cli.send_cmd",
    "duckpacs.cli.queue_cmd",
    "duckpacs.cli.protect_cmd",
    "duckpacs.cli.worklist_cmd",
    "duckpacs.cli.reindex_cmd",
    "duckpacs.cli.user_cmds",
    "duckpacs.cli.anonymize_cmd",
    "duckpacs.cli.dicomdir_cmd",
    "duckpacs.cli.scans_cmd",
    "duckpacs.cli.migrate_cmd",
    "duckpacs.cli.import_cmd",
    "duckpacs.cli.export_cmd",
)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duckpacs",
        description="A self-contained DICOM archive. Run `duckpacs COMMAND --help` for details.",
        parents=[common_options(top_level=True)],
    )
    common = common_options(top_level=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in map(importlib.import_module, COMMAND_MODULES):
        module.register(subparsers, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
