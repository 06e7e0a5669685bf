"""Commands start at once: each loads only the modules of what it runs (issue 14).

The parser is built in two steps (``duckpacs.cli.main.parse``): the top level alone, from the
table ``COMMANDS``, then the chosen command's module. These tests check that the table and
the modules' own registrations agree, and that `version`, `--help` and `dump` do not import
the heavy libraries (DuckDB, pydicom, numpy, pynetdicom, the web stack).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import duckpacs.cli
from duckpacs.cli.main import COMMAND_MODULES, COMMANDS, common_options
from tests.corpus import synthetic_files

# What a light command must not load: each costs tens of milliseconds or megabytes.
HEAVY = (
    "duckdb",
    "numpy",
    "pydicom",
    "pynetdicom",
    "starlette",
    "uvicorn",
    "PIL",
    "pyarrow",
    "duckpacs.server",
    "duckpacs.web",
    "duckpacs.index",
    "duckpacs.archive",
    "duckpacs.net",
)

# Runs main() with the given arguments, then writes the names of the loaded modules.
PROBE = """
import contextlib, io, json, sys
from duckpacs.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        code = main(sys.argv[2:])
    except SystemExit as e:
        code = e.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def loaded_modules(tmp_path: Path, *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    subprocess.run([sys.executable, "-c", PROBE, str(out), *args], check=True, timeout=60)
    result = json.loads(out.read_text())
    assert result["code"] in (0, None), result["code"]
    return set(result["modules"])


def heavy_among(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def registered_commands() -> dict[str, tuple[str, str]]:
    """Every command the modules of duckpacs.cli register, with its module and help."""
    found: dict[str, tuple[str, str]] = {}
    for info in pkgutil.iter_modules(duckpacs.cli.__path__, "duckpacs.cli."):
        module = importlib.import_module(info.name)
        if not hasattr(module, "register"):
            continue
        parser = argparse.ArgumentParser()
        subparsers = parser.add_subparsers()
        module.register(subparsers, common_options(top_level=False))
        for action in subparsers._choices_actions:
            found[action.dest] = (info.name, str(action.help))
    return found


def test_the_command_table_matches_the_modules() -> None:
    """A command missing from COMMANDS would be unreachable; a stale summary would lie."""
    assert registered_commands() == COMMANDS


@pytest.mark.parametrize(
    "args", [["version"], ["version", "--json"], ["--help"], ["dump", "--help"]], ids=" ".join
)
def test_light_commands_load_no_heavy_library(tmp_path: Path, args: list[str]) -> None:
    assert heavy_among(loaded_modules(tmp_path, *args)) == []


def test_dump_loads_only_the_parser(tmp_path: Path) -> None:
    dcm = next(p for p in synthetic_files(include_gz=False) if p.suffix == ".dcm")
    assert heavy_among(loaded_modules(tmp_path, "dump", str(dcm))) == []


def test_a_heavy_command_still_gets_what_it_runs(tmp_path: Path) -> None:
    """The two-step parse must not leave a command without its module: `find` needs DuckDB."""
    modules = loaded_modules(tmp_path, "find", "--help")
    assert "duckpacs.cli.find_cmd" in modules
    assert "duckpacs.cli.serve_cmd" not in modules


@pytest.mark.parametrize("module", sorted(COMMAND_MODULES))
def test_each_command_module_imports_on_its_own(module: str) -> None:
    """A command's module is now the first of duckpacs a process imports: an import cycle
    that another module used to resolve by loading first would break that command alone
    (`duckpacs reindex` did). So each is started in a fresh interpreter."""
    command = next(iter(COMMAND_MODULES[module]))
    result = subprocess.run(
        [sys.executable, "-m", "duckpacs.cli.main", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"usage: duckpacs {command}" in result.stdout


def test_top_level_options_before_the_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "duckpacs.cli.main", "--data", str(tmp_path), "version", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    # The test suite runs from a Python install, never from the single-file executable.
    assert info["runs_as"] in ("venv", "python")
    assert info["location"] == sys.prefix
