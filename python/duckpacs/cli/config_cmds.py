"""``duckpacs init``, ``duckpacs version`` and ``duckpacs config show``."""

from __future__ import annotations

import argparse
import platform
import sys

import duckpacs
from duckpacs import config
from duckpacs.cli.context import print_json, settings
from duckpacs.errors import ConfigError


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "init",
        parents=[common],
        help="create an archive folder with a commented default configuration",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing duckpacs.toml")
    p.set_defaults(func=cmd_init)

    p = subparsers.add_parser(
        "version",
        parents=[common],
        help="print duckpacs, Python and Rust versions and the build profile",
        description="Print duckpacs, Python and Rust versions, the build profile, and whether "
        "this is the single-file executable or an install in a Python environment.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_version)

    p = subparsers.add_parser("config", parents=[common], help="inspect the configuration")
    sub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = sub.add_parser(
        "show",
        parents=[common],
        help="print the effective configuration and where each value came from",
    )
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_config_show)


def cmd_init(args: argparse.Namespace) -> int:
    s = settings(args)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    target = s.data_dir / config.CONFIG_FILENAME
    if target.exists() and not args.force:
        raise ConfigError(f"{target} already exists (use --force to overwrite)")
    target.write_text(config.DEFAULT_FILE, encoding="utf-8")
    print(f"initialised archive in {s.data_dir}")
    print(f"configuration: {target}")
    print(f"start it with: duckpacs serve --data {s.data_dir}")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    info = {
        "duckpacs": duckpacs.__version__,
        "python": platform.python_version(),
        "rust": duckpacs.RUSTC_VERSION,
        "build_profile": duckpacs.BUILD_PROFILE,
        **runs_from(),
    }
    if args.json:
        print_json(info)
    else:
        print(f"duckpacs {info['duckpacs']} ({info['build_profile']} build)")
        print(f"python   {info['python']}")
        print(f"rust     {info['rust']}")
        print(f"runs as  {info['runs_as']}: {info['location']}")
    return 0


def runs_from() -> dict[str, str]:
    """How this process was started: ``executable`` (the single file `make dist` builds, which
    PyInstaller marks with ``sys.frozen``; its location is the file itself), ``venv`` (an
    install in a virtual environment) or ``python`` (an install in a Python outside any)."""
    if getattr(sys, "frozen", False):
        return {"runs_as": "executable", "location": sys.executable}
    kind = "venv" if sys.prefix != sys.base_prefix else "python"
    return {"runs_as": kind, "location": sys.prefix}


def cmd_config_show(args: argparse.Namespace) -> int:
    s = settings(args)
    if args.json:
        print_json(s.as_json())
        return 0
    print(f"# configuration file: {s.config_file or '(none; built-in defaults)'}")
    width = max(len(k) for k in s.values)
    for key, value in s.values.items():
        shown = ", ".join(sorted(value)) if isinstance(value, frozenset) else value
        print(f"{key:<{width}}  {str(shown):<24}  # {s.sources[key]}")
    for name, peer in s.peers.items():
        perms = ",".join(sorted(peer.permissions))
        print(f"peers.{name}: {peer.ae_title}@{peer.host}:{peer.port} [{perms}]")
    for route in s.routes:
        when = route.trigger
        if route.trigger == "stable-study":
            when += f" after {route.stable_seconds} s"
        print(
            f"route {route.name}: {route.match or 'everything'} -> {', '.join(route.to)} ({when})"
        )
    for rule in s.retention:
        print(f"retention {rule.name}: {rule.match or 'every study'} kept {rule.keep_days} days")
    return 0
