"""``duckpacs user``: manage the web users (``users.json`` in the data folder).

duckpacs user add alice --role viewer          # asks for the password twice
echo "$PW" | duckpacs user add bot --role uploader --password-stdin
duckpacs user list [--json]
duckpacs user remove alice
duckpacs user logout-all [alice]               # end every session and token (of alice)
"""

from __future__ import annotations

import argparse
import getpass
import sys

from duckpacs.cli.context import print_json, settings
from duckpacs.errors import ConfigError
from duckpacs.web.auth import ROLES, USERS_FILENAME, UserStore


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("user", parents=[common], help="manage web and DICOMweb users")
    sub = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", parents=[common], help="create a user or replace its password")
    add.add_argument("name", help="user name")
    add.add_argument(
        "--role",
        action="append",
        choices=ROLES,
        required=True,
        help="viewer (search, view), uploader (also store), admin (everything); repeatable",
    )
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    add.set_defaults(func=cmd_add)
    rm = sub.add_parser("remove", parents=[common], help="delete a user (revokes its tokens)")
    rm.add_argument("name")
    rm.set_defaults(func=cmd_remove)
    out = sub.add_parser(
        "logout-all", parents=[common], help="end every web session and token (of one user)"
    )
    out.add_argument("name", nargs="?", help="only this user's")
    out.set_defaults(func=cmd_logout_all)
    ls = sub.add_parser("list", parents=[common], help="list users and their roles")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_list)


def _store(args: argparse.Namespace) -> UserStore:
    return UserStore(settings(args).data_dir / USERS_FILENAME)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("the two passwords differ")
    return first


def cmd_add(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        store.set_user(args.name, _password(args), list(args.role))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    print(f"user {args.name}: {', '.join(sorted(set(args.role)))}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    if not _store(args).remove(args.name):
        raise ConfigError(f"no such user: {args.name}")
    print(f"removed {args.name}")
    return 0


def cmd_logout_all(args: argparse.Namespace) -> int:
    names = _store(args).revoke(args.name)
    if args.name and not names:
        raise ConfigError(f"no such user: {args.name}")
    print(f"logged out: {', '.join(names) or 'no users'}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    users = {name: sorted(store.roles_of(name) or ()) for name in store.names()}
    if args.json:
        print_json(users)
    else:
        for name, roles in users.items():
            print(f"{name}\t{', '.join(roles)}")
    return 0
