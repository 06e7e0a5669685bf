"""The ``[store]`` configuration: local packs by default; ``s3`` with an endpoint, a bucket,
credentials from the environment or a file (never shown, logged or echoed in an error), and
the PostgreSQL index it needs. ``open_store`` hands the S3 settings to the Rust store only
when they are configured (the store itself is replaced by a recorder here: the binding's
``remote`` argument is the Rust side's to test)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from duckpacs import config, store_config
from duckpacs.archive import layout
from duckpacs.errors import ConfigError

SECRET = "wJalrXUtnFEMI-K7MDENG-SECRET"
ACCESS = "AKIAEXAMPLEACCESS"
PG = {"DUCKPACS_INDEX_BACKEND": "postgres", "DUCKPACS_INDEX_DSN": "postgresql://dp@db/a"}
S3 = {
    **PG,
    "DUCKPACS_STORE_BACKEND": "s3",
    "DUCKPACS_STORE_ENDPOINT": "http://127.0.0.1:9000",
    "DUCKPACS_STORE_BUCKET": "archive",
    "DUCKPACS_NODE": "front-1",
}


@pytest.fixture(autouse=True)
def _unconfigured() -> Iterator[None]:
    yield
    store_config._configured = None  # as a new process: other tests open local stores


def load(env: dict[str, str], tmp_path: Path) -> config.Settings:
    return config.load(env=env, cwd=tmp_path)


def test_defaults_keep_packs_local(tmp_path: Path) -> None:
    s = load({}, tmp_path)
    assert s["store.backend"] == "local"
    assert (s["store.prefix"], s["store.region"]) == ("duckpacs", "us-east-1")
    assert (s["store.access_key_env"], s["store.secret_key_env"]) == (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    )  # fmt: skip
    assert s["store.cache_bytes"] == 256 * 2**20 and s["store.max_pending_bytes"] == 2**30
    assert (s["store.seal_seconds"], s["store.timeout"]) == (2.0, 10.0)
    assert store_config.from_settings(s) is None


def test_s3_needs_endpoint_bucket_and_the_postgres_index(tmp_path: Path) -> None:
    without = {k: v for k, v in S3.items() if k != "DUCKPACS_STORE_ENDPOINT"}
    with pytest.raises(ConfigError, match=r"needs store\.endpoint"):
        load(without, tmp_path)
    without = {k: v for k, v in S3.items() if k != "DUCKPACS_STORE_BUCKET"}
    with pytest.raises(ConfigError, match=r"needs store\.bucket"):
        load(without, tmp_path)
    embedded = {k: v for k, v in S3.items() if k not in PG}
    with pytest.raises(ConfigError, match=r"needs index\.backend = postgres"):
        load(embedded, tmp_path)
    with pytest.raises(ConfigError, match="local or s3"):
        load({**S3, "DUCKPACS_STORE_BACKEND": "nfs"}, tmp_path)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("DUCKPACS_STORE_ENDPOINT", "ftp://s3.example.org", "http:// or https://"),
        ("DUCKPACS_STORE_ENDPOINT", "s3.example.org", "http:// or https://"),
        ("DUCKPACS_STORE_BUCKET", "Bad_Bucket", "bucket name"),
        ("DUCKPACS_STORE_PREFIX", "../up", "key prefix"),
        ("DUCKPACS_STORE_CACHE_BYTES", "lots", "number of bytes"),
        ("DUCKPACS_STORE_TIMEOUT", "0", "seconds"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(
    tmp_path: Path, key: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        load({**S3, key: value}, tmp_path)
    assert "\n" not in str(caught.value)
    assert key.removeprefix("DUCKPACS_").lower().replace("_", ".", 1) in str(caught.value)


def test_credentials_in_the_endpoint_are_refused_without_echoing_them(tmp_path: Path) -> None:
    url = f"https://{ACCESS}:{SECRET}@s3.example.org"
    with pytest.raises(ConfigError) as caught:
        load({**S3, "DUCKPACS_STORE_ENDPOINT": url}, tmp_path)
    assert SECRET not in str(caught.value) and ACCESS not in str(caught.value)
    assert "without credentials" in str(caught.value)


def test_credentials_from_the_environment_or_a_file(tmp_path: Path) -> None:
    s = load(S3, tmp_path)
    s3 = store_config.from_settings(
        s, {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
    )
    assert s3 is not None and (s3.access_key, s3.secret_key) == (ACCESS, SECRET)
    named = load({**S3, "DUCKPACS_STORE_ACCESS_KEY_ENV": "MY_KEY",
                  "DUCKPACS_STORE_SECRET_KEY_ENV": "MY_SECRET"}, tmp_path)  # fmt: skip
    s3 = store_config.from_settings(named, {"MY_KEY": "a", "MY_SECRET": "b"})
    assert s3 is not None and (s3.access_key, s3.secret_key) == ("a", "b")
    file = tmp_path / "s3-credentials"
    file.write_text(f'# the archive\'s S3 user\naccess_key = {ACCESS}\n\nsecret_key = "{SECRET}"\n')
    from_file = load({**S3, "DUCKPACS_STORE_CREDENTIALS_FILE": str(file)}, tmp_path)
    s3 = store_config.from_settings(from_file, {})
    assert s3 is not None and (s3.access_key, s3.secret_key) == (ACCESS, SECRET)


def test_missing_or_bad_credentials_are_one_line_without_secrets(tmp_path: Path) -> None:
    s = load(S3, tmp_path)
    with pytest.raises(ConfigError, match="AWS_SECRET_ACCESS_KEY is not set") as caught:
        store_config.from_settings(s, {"AWS_ACCESS_KEY_ID": ACCESS})
    assert ACCESS not in str(caught.value)
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are"):
        store_config.from_settings(s, {})
    file = tmp_path / "creds"
    for text, expected in (
        (f"access_key = {ACCESS}\n", "no secret_key"),
        (f"access_key = {ACCESS}\n{SECRET}\n", "line 2"),
        (f"access_key = {ACCESS}\npassword = {SECRET}\n", "line 2"),
    ):
        file.write_text(text)
        with_file = load({**S3, "DUCKPACS_STORE_CREDENTIALS_FILE": str(file)}, tmp_path)
        with pytest.raises(ConfigError, match=expected) as caught:
            store_config.from_settings(with_file, {})
        assert SECRET not in str(caught.value) and ACCESS not in str(caught.value)
    missing = load({**S3, "DUCKPACS_STORE_CREDENTIALS_FILE": str(tmp_path / "no")}, tmp_path)
    with pytest.raises(ConfigError, match="cannot read it"):
        store_config.from_settings(missing, {})


def test_the_node_name_must_fit_a_folder_of_the_bucket(tmp_path: Path) -> None:
    s = load({**S3, "DUCKPACS_NODE": "front 1/a"}, tmp_path)
    with pytest.raises(ConfigError, match=r"index\.node = 'front 1/a'"):
        store_config.from_settings(s, {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    unnamed = load({k: v for k, v in S3.items() if k != "DUCKPACS_NODE"}, tmp_path)
    keys = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
    s3 = store_config.from_settings(unnamed, keys)
    assert s3 is not None and s3.node  # hostname-<hash of the data folder>


def test_the_binding_carries_every_setting_and_repr_hides_the_keys(tmp_path: Path) -> None:
    env = {**S3, "DUCKPACS_STORE_PREFIX": "/site-a/archive/", "DUCKPACS_STORE_REGION": "eu-west-1",
           "DUCKPACS_STORE_CACHE_BYTES": "64 MiB", "DUCKPACS_STORE_TIMEOUT": "2.5",
           "DUCKPACS_STORE_ENDPOINT": "https://s3.example.org/"}  # fmt: skip
    s3 = store_config.from_settings(
        load(env, tmp_path), {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
    )
    assert s3 is not None
    assert s3.binding() == {
        "endpoint": "https://s3.example.org", "bucket": "archive", "prefix": "site-a/archive",
        "region": "eu-west-1", "access_key": ACCESS, "secret_key": SECRET, "node": "front-1",
        "cache_bytes": 64 * 2**20, "timeout_ms": 2500,
    }  # fmt: skip
    for shown in (repr(s3), str(s3), json.dumps(s3.describe())):
        assert SECRET not in shown and ACCESS not in shown


class RecordingStore:
    """Stands in for ``duckpacs._core.Store``: records how ``open_store`` called it."""

    calls: list[tuple[Any, dict[str, Any]]] = []

    def __init__(self, path: Any, **kwargs: Any) -> None:
        RecordingStore.calls.append((path, kwargs))


def test_open_store_passes_remote_only_with_s3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layout._core, "Store", RecordingStore)
    RecordingStore.calls.clear()
    store_config.configure(load({}, tmp_path))
    layout.open_store(tmp_path, 1)
    assert RecordingStore.calls[-1] == (tmp_path / "store", {"writer_id": 1})
    store_config.configure(
        load(S3, tmp_path), {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
    )
    layout.open_store(tmp_path)
    path, kwargs = RecordingStore.calls[-1]
    assert kwargs["writer_id"] is None
    assert kwargs["remote"]["secret_key"] == SECRET and kwargs["remote"]["node"] == "front-1"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "duckpacs.cli.main", *args],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip


def test_config_show_never_shows_the_credentials(tmp_path: Path) -> None:
    cfg = tmp_path / "duckpacs.toml"
    creds = tmp_path / "s3-credentials"
    creds.write_text(f"access_key = {ACCESS}\nsecret_key = {SECRET}\n")
    cfg.write_text(
        '[index]\nbackend = "postgres"\ndsn = "postgresql://dp@db/a"\n'
        '[store]\nbackend = "s3"\nendpoint = "http://127.0.0.1:9000"\nbucket = "archive"\n'
        f'credentials_file = "{creds}"\n'
    )
    secrets = {"AWS_ACCESS_KEY_ID": ACCESS + "ENV", "AWS_SECRET_ACCESS_KEY": SECRET + "ENV"}
    for args in (("config", "show", "--json"), ("config", "show"), ("--debug", "config", "show")):
        run = run_cli(*args, "--config", str(cfg), env=secrets)
        assert run.returncode == 0, run.stderr
        assert SECRET not in run.stdout + run.stderr and ACCESS not in run.stdout + run.stderr
    shown = json.loads(run_cli("config", "show", "--json", "--config", str(cfg), env={}).stdout)
    assert shown["settings"]["store.backend"]["value"] == "s3"
    assert shown["settings"]["store.credentials_file"]["value"] == str(creds)


def test_missing_credentials_stop_a_command_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "duckpacs.toml"
    cfg.write_text(
        '[index]\nbackend = "postgres"\ndsn = "postgresql://dp@db/a"\n'
        '[store]\nbackend = "s3"\nendpoint = "http://127.0.0.1:9000"\nbucket = "archive"\n'
    )
    run = run_cli("config", "show", "--config", str(cfg), env={"AWS_ACCESS_KEY_ID": ACCESS})
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "AWS_SECRET_ACCESS_KEY is not set" in errors[0], run.stderr
    assert ACCESS not in run.stderr
