"""``duckpacs queue``: what waits to be forwarded, what failed and why; retry or drop jobs.

Works on the queue file in the data folder (``queue.sqlite``) whether or not the server
runs; a running server picks up a retry within a second.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from duckpacs.cli.context import print_json, settings
from duckpacs.config import Settings
from duckpacs.errors import ConfigError, QueryError
from duckpacs.routing.engine import open_queue
from duckpacs.routing.queue import STATES


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "queue",
        parents=[common],
        help="the forwarding queue: per destination what waits and what failed; retry, drop",
        description="Without an action: one line per destination (waiting, failed, sent, "
        "next try, last error).",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_summary)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser("list", parents=[common], help="list jobs")
    show.add_argument("--to", metavar="PEER", help="one destination")
    show.add_argument("--study", metavar="UID", help="one study")
    show.add_argument(
        "--state",
        choices=(*STATES, "all"),
        help="one state (default: waiting, sending and failed)",
    )
    show.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_list)
    for name, verb in (("retry", "retry now (attempts reset)"), ("drop", "take out of the queue")):
        a = actions.add_parser(name, parents=[common], help=f"failed and waiting jobs: {verb}")
        a.add_argument("ids", nargs="*", type=int, metavar="ID", help="job numbers (queue list)")
        a.add_argument("--to", metavar="PEER", help="every job of this destination")
        a.add_argument("--study", metavar="UID", help="every job of this study")
        a.add_argument("--all", action="store_true", help="every failed and waiting job")
        a.add_argument("--json", action="store_true", help="machine-readable output")
        a.set_defaults(func=cmd_act, verb=name)


def _destination(s: Settings, name: str | None) -> str | None:
    """A destination as the queue names it: the peer's name (given by name or AE title)."""
    if not name:
        return None
    try:
        return s.peer(name).name
    except ConfigError:
        return name  # a peer no longer configured may still have jobs


def _when(t: float | None) -> str:
    if not t:
        return "now"
    left = t - time.time()
    return "now" if left <= 0 else f"in {left:.0f} s"


def cmd_summary(args: argparse.Namespace) -> int:
    s = settings(args)
    queue = open_queue(s)
    try:
        rows = queue.summary()
    finally:
        queue.close()
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("the queue is empty")
        return 0
    for r in rows:
        pending = r["waiting"] + r["sending"] + r["answered"]
        line = f"{r['destination']}: {pending} waiting, {r['failed']} failed, {r['sent']} sent"
        if r["dropped"]:
            line += f", {r['dropped']} dropped"
        if pending:
            line += f"; next try {_when(r['next_try'])}"
        if r["error"] and (pending or r["failed"]):
            line += f"; last error: {r['error']}"
        print(line)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    s = settings(args)
    states: tuple[str, ...] = ("waiting", "sending", "answered", "failed")
    if args.state == "all":
        states = ()
    elif args.state:
        states = (args.state,)
    queue = open_queue(s)
    try:
        jobs = queue.jobs(states=states, destination=_destination(s, args.to),
                          study=args.study, limit=max(1, args.limit))  # fmt: skip
    finally:
        queue.close()
    if args.json:
        print_json([j.as_json() for j in jobs])
        return 0
    for j in jobs:
        extra = f" (attempts {j.attempts}: {j.error})" if j.error else ""
        print(f"{j.id:>8}  {j.destination}  {j.state:<8} {j.sop_instance_uid}  {j.origin}{extra}")
    return 0


def cmd_act(args: argparse.Namespace) -> int:
    s = settings(args)
    if not (args.ids or args.to or args.study or args.all):
        raise QueryError(f"name the jobs to {args.verb}: ID ..., --to PEER, --study UID or --all")
    selection: dict[str, Any] = {"ids": args.ids, "destination": _destination(s, args.to),
                                 "study": args.study}  # fmt: skip
    queue = open_queue(s)
    try:
        count = queue.retry(**selection) if args.verb == "retry" else queue.drop(**selection)
    finally:
        queue.close()
    if args.json:
        print_json({args.verb: count})
    else:
        done = "queued again" if args.verb == "retry" else "dropped"
        print(f"{count} jobs {done}")
    return 0
