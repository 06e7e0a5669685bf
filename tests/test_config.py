"""Configuration precedence (flag > env > file > default) and one clear error per bad setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from duckpacs import config
from duckpacs.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_when_nothing_is_configured(tmp_path: Path) -> None:
    s = config.load(env={}, cwd=tmp_path)
    assert s.ae_title == "DUCKPACS"
    assert s["dimse.port"] == 11112
    assert s["http.port"] == 8042
    assert s["http.bind"] == "127.0.0.1"
    assert s.data_dir == tmp_path / "duckpacs-data"
    assert s.config_file is None
    assert set(s.sources.values()) == {"default"}


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "duckpacs.toml",
        '[dimse]\nport = 2000\nae_title = "FILEAE"\n[http]\nport = 3000\n',
    )
    env = {"DUCKPACS_DIMSE_PORT": "2001", "DUCKPACS_HTTP_PORT": "3001"}
    s = config.load(env=env, cwd=tmp_path, flags={"dimse.port": 2002, "http.port": None})
    assert s["dimse.port"] == 2002 and s.sources["dimse.port"] == "flag"
    assert s["http.port"] == 3001 and s.sources["http.port"] == "env DUCKPACS_HTTP_PORT"
    assert s.ae_title == "FILEAE" and s.sources["dimse.ae_title"] == f"file {cfg}"
    assert s["http.bind"] == "127.0.0.1" and s.sources["http.bind"] == "default"


def test_a_retired_key_is_read_with_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file written by an earlier version (``workers = 2``) still starts the archive."""
    write(tmp_path / "duckpacs.toml", "[archive]\nworkers = 2\n[dimse]\nport = 2000\n")
    import logging

    logger = logging.getLogger("duckpacs")
    logger.addHandler(caplog.handler)  # the duckpacs logger may not propagate (logs.setup)
    try:
        s = config.load(env={}, cwd=tmp_path)
    finally:
        logger.removeHandler(caplog.handler)
    assert s["dimse.port"] == 2000
    assert "archive.workers is no longer used" in caplog.text


def test_data_dir_precedence(tmp_path: Path) -> None:
    write(tmp_path / "duckpacs.toml", '[archive]\ndata_dir = "from-file"\n')
    assert config.load(env={}, cwd=tmp_path).data_dir == tmp_path / "from-file"
    env = {"DUCKPACS_DATA_DIR": str(tmp_path / "from-env")}
    assert config.load(env=env, cwd=tmp_path).data_dir == tmp_path / "from-env"
    flags = {"archive.data_dir": str(tmp_path / "from-flag")}
    assert config.load(env=env, cwd=tmp_path, flags=flags).data_dir == tmp_path / "from-flag"


def test_config_file_inside_data_dir_is_found(tmp_path: Path) -> None:
    data = tmp_path / "archive"
    data.mkdir()
    write(data / "duckpacs.toml", '[dimse]\nae_title = "INDATA"\n')
    s = config.load(env={}, cwd=tmp_path, flags={"archive.data_dir": str(data)})
    assert s.ae_title == "INDATA"
    assert s.config_file == data / "duckpacs.toml"
    # The file's own directory anchors relative paths: no data_dir key means the flag's folder.
    assert s.data_dir == data


def test_explicit_config_file_via_env_and_argument(tmp_path: Path) -> None:
    cfg = write(tmp_path / "other.toml", '[dimse]\nae_title = "OTHER"\n')
    assert config.load(env={"DUCKPACS_CONFIG": str(cfg)}, cwd=tmp_path).ae_title == "OTHER"
    assert config.load(config_path=cfg, env={}, cwd=tmp_path).ae_title == "OTHER"
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(config_path=tmp_path / "missing.toml", env={}, cwd=tmp_path)


def test_default_file_written_by_init_is_valid_and_matches_defaults(tmp_path: Path) -> None:
    cfg = write(tmp_path / "duckpacs.toml", config.DEFAULT_FILE)
    s = config.load(env={}, cwd=tmp_path)
    assert s.config_file == cfg
    defaults = config.load(env={}, cwd=tmp_path / "elsewhere")
    for key in s.values:
        if key != "archive.data_dir":
            assert s[key] == defaults[key], key


def test_peers_are_parsed_with_permissions(tmp_path: Path) -> None:
    write(
        tmp_path / "duckpacs.toml",
        """
[peers.ct]
ae_title = "CT1"
host = "10.1.2.3"
port = 104
permissions = ["echo", "STORE"]
[peers.viewer]
ae_title = "VIEW"
host = "viewer.local"
port = 11112
""",
    )
    s = config.load(env={}, cwd=tmp_path)
    assert s.peers["ct"].permissions == frozenset({"echo", "store"})
    assert s.peers["viewer"].permissions == frozenset(config.PERMISSIONS)
    assert s.peer_by_ae_title("CT1 ") is s.peers["ct"]
    assert s.peer_by_ae_title("NOBODY") is None


BAD_FILES = [
    (
        "[dimse]\nport = 70000\n",
        r"dimse\.port = 70000 is invalid: expected an integer from 1 to 65535",
    ),
    ('[dimse]\nport = "abc"\n', r"dimse\.port = 'abc' is invalid"),
    ("[dimse]\nport = true\n", r"dimse\.port = True is invalid"),
    ('[dimse]\nae_title = "THIS_TITLE_IS_TOO_LONG"\n', r"dimse\.ae_title .* 1 to 16"),
    ('[dimse]\nae_title = "A\\\\B"\n', r"dimse\.ae_title .* no backslash"),
    ('[dimse]\nae_title = ""\n', r"dimse\.ae_title = '' is invalid"),
    ('[dimse]\nbind = "999.1.1.1"\n', r"dimse\.bind = '999\.1\.1\.1' is invalid: expected an IP"),
    ("[http]\nbind = 5\n", r"http\.bind = 5 is invalid"),
    (
        '[archive]\nlog_level = "LOUD"\n',
        r"archive\.log_level = 'LOUD' is invalid: expected one of DEBUG",
    ),
    (
        '[dimse]\naccept_any = "maybe"\n',
        r"dimse\.accept_any = 'maybe' is invalid: expected true or false",
    ),
    (
        '[dimse]\nunknown_peer_permissions = ["echo", "delete"]\n',
        r"unknown_peer_permissions .* expected a list drawn from echo, store, find, move, get",
    ),
    ("[dimse]\nprot = 5\n", r"unknown key dimse\.prot; allowed: dimse\.ae_title"),
    ("[dicom]\nport = 5\n", r"unknown section \[dicom\]"),
    ("[dimse\nport = 5\n", r"not valid TOML"),
    ("dimse = 5\n", r"dimse must be a table"),
    ('[peers.ct]\nae_title = "CT"\nhost = "h"\n', r"peers\.ct: missing port"),
    ('[peers.ct]\nae_title = "CT"\nhost = "h"\nport = 0\n', r"peers\.ct\.port = 0 is invalid"),
    (
        '[peers.ct]\nae_title = "CT"\nhost = "h"\nport = 104\npermissions = ["fly"]\n',
        r"peers\.ct\.permissions .* expected a list drawn from",
    ),
    ('[peers.ct]\nae_title = "CT"\nhost = ""\nport = 104\n', r"peers\.ct\.host = '' is invalid"),
    ('[peers.ct]\nae_title = "CT"\nhost = "h"\nport = 104\ncolour = 1\n', r"unknown key colour"),
    (
        '[peers.a]\nae_title = "X"\nhost = "h"\nport = 1\n[peers.b]\nae_title = "X"\nhost = "h"\n'
        "port = 2\n",
        r"AE title 'X' is used by more than one peer",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_each_kind_of_bad_setting_fails_with_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    write(tmp_path / "duckpacs.toml", text)
    with pytest.raises(ConfigError, match=message) as info:
        config.load(env={}, cwd=tmp_path)
    assert "\n" not in str(info.value)
    assert str(tmp_path / "duckpacs.toml") in str(info.value)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("DUCKPACS_DIMSE_PORT", "0", r"env DUCKPACS_DIMSE_PORT: dimse\.port = '0' is invalid"),
        ("DUCKPACS_HTTP_PORT", "http", r"http\.port = 'http' is invalid"),
        ("DUCKPACS_AE_TITLE", "x" * 17, r"dimse\.ae_title"),
        ("DUCKPACS_LOG_LEVEL", "trace", r"archive\.log_level = 'trace'"),
        ("DUCKPACS_DIMSE_BIND", "nowhere", r"dimse\.bind = 'nowhere'"),
    ],
)
def test_bad_environment_values_name_the_variable(
    tmp_path: Path, var: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(env={var: value}, cwd=tmp_path)


def test_bad_flag_value_is_reported_as_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^flag: dimse\.port = 99999 is invalid"):
        config.load(env={}, cwd=tmp_path, flags={"dimse.port": 99999})


def test_env_values_are_normalised(tmp_path: Path) -> None:
    env = {
        "DUCKPACS_LOG_LEVEL": "debug",
        "DUCKPACS_DIMSE_BIND": "localhost",
        "DUCKPACS_ACCEPT_ANY": "yes",
        "DUCKPACS_UNKNOWN_PEER_PERMISSIONS": "echo,store",
    }
    s = config.load(env=env, cwd=tmp_path)
    assert s["archive.log_level"] == "DEBUG"
    assert s["dimse.bind"] == "127.0.0.1"
    assert s["dimse.accept_any"] is True
    assert s["dimse.unknown_peer_permissions"] == frozenset({"echo", "store"})
