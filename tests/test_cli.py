"""The `duckpacs` command line: help on every command, version, init, config show, errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import duckpacs
from duckpacs.cli.main import build_parser, main
from tests.helpers import duckpacs_cmd


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        duckpacs_cmd(*args),
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def subcommand_names() -> list[list[str]]:
    parser = build_parser()
    names: list[list[str]] = []
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():
            names.append([name])
            for sub_action in (
                getattr(sub, "_subparsers", None)._group_actions if sub._subparsers else []
            ):
                names.extend([name, inner] for inner in sub_action.choices)
    return names


@pytest.mark.parametrize("command", subcommand_names(), ids=" ".join)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: duckpacs" in capsys.readouterr().out


def test_version_reports_python_rust_and_profile() -> None:
    result = run("version", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["duckpacs"] == duckpacs.__version__
    assert info["python"].startswith("3.")
    assert info["rust"].startswith("rustc ")
    assert info["build_profile"] in ("release", "debug")


def test_init_writes_config_and_refuses_to_overwrite(tmp_path: Path) -> None:
    data = tmp_path / "archive"
    first = run("init", "--data", str(data))
    assert first.returncode == 0, first.stderr
    assert (data / "duckpacs.toml").is_file()
    second = run("init", "--data", str(data))
    assert second.returncode == 2
    assert second.stderr.strip().startswith("duckpacs: error:")
    assert "already exists" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert run("init", "--data", str(data), "--force").returncode == 0


def test_config_show_json_reports_sources(tmp_path: Path) -> None:
    data = tmp_path / "archive"
    run("init", "--data", str(data))
    result = run(
        "config", "show", "--json", "--data", str(data), env={"DUCKPACS_HTTP_PORT": "9000"}
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["config_file"] == str(data / "duckpacs.toml")
    settings = shown["settings"]
    assert settings["archive.data_dir"] == {"value": str(data), "source": "flag"}
    assert settings["http.port"] == {"value": 9000, "source": "env DUCKPACS_HTTP_PORT"}
    assert settings["dimse.ae_title"]["source"] == f"file {data / 'duckpacs.toml'}"


def test_config_show_text(tmp_path: Path) -> None:
    result = run("config", "show", cwd=tmp_path, env={"DUCKPACS_DATA_DIR": str(tmp_path / "d")})
    assert result.returncode == 0
    assert "dimse.ae_title" in result.stdout and "DUCKPACS" in result.stdout
    assert "# env DUCKPACS_DATA_DIR" in result.stdout


def test_bad_configuration_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "duckpacs.toml").write_text("[dimse]\nport = 0\n")
    result = run("config", "show", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "dimse.port = 0 is invalid" in lines[0]
    assert "Traceback" not in result.stderr


def test_debug_shows_traceback(tmp_path: Path) -> None:
    (tmp_path / "duckpacs.toml").write_text("[dimse]\nport = 0\n")
    result = run("--debug", "config", "show", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" in result.stderr
