"""``duckpacs serve``: run the archive (DIMSE and HTTP) in the foreground."""

from __future__ import annotations

import argparse

from duckpacs import logs
from duckpacs.cli.context import settings
from duckpacs.server.runner import serve


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("serve", parents=[common], help="run the archive: DIMSE and HTTP")
    p.add_argument("--ae-title", help="our AE title (dimse.ae_title)")
    p.add_argument("--port", type=int, help="DIMSE port (dimse.port)")
    p.add_argument("--bind", help="DIMSE bind address (dimse.bind)")
    p.add_argument("--http-port", type=int, help="HTTP port (http.port)")
    p.add_argument("--http-bind", help="HTTP bind address (http.bind)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (archive.log_level)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    s = settings(args)
    logs.setup(s["archive.log_level"])
    serve(s)
    return 0
