"""HTTP security: roles, Argon2 hashes, sessions, Basic and bearer, anonymous loopback,
the audit log, CORS on every answer, HTTPS, and the configuration keys behind them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from duckpacs import config
from duckpacs.errors import ConfigError
from duckpacs.web import auth
from tests.web_support.server import FAST_HASHER, WebServer, web_server

ORIGIN = "https://viewer.example.org"
USERS = {
    "vera": ("viewer-pass-1", ["viewer"]),
    "ulla": ("uploader-pass-1", ["uploader"]),
    "ada": ("admin-pass-123", ["admin"]),
}


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """Anonymous access off, one allowed CORS origin."""
    with web_server(
        Path(tmp_path_factory.mktemp("locked")),
        users=USERS,
        http__anonymous="off",
        http__cors_origins=[ORIGIN],
    ) as server:
        yield server


def test_no_credentials_is_401_with_cors_and_a_challenge(locked: WebServer) -> None:
    r = requests.get(locked.dicomweb + "/studies", headers={"Origin": ORIGIN})
    assert r.status_code == 401
    assert r.json() == {"error": "authentication required", "status": 401}
    assert r.headers["www-authenticate"].startswith("Basic")
    assert r.headers["access-control-allow-origin"] == ORIGIN
    other = requests.get(locked.dicomweb + "/studies", headers={"Origin": "https://evil.test"})
    assert "access-control-allow-origin" not in other.headers
    # The UI shell and the status stay public so the login page can load.
    assert requests.get(locked.url + "/").status_code == 200
    assert requests.get(locked.url + "/api/status").json() == {"ok": True}


def test_preflight_needs_no_credentials(locked: WebServer) -> None:
    r = requests.options(
        locked.dicomweb + "/studies",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN


def test_errors_carry_cors_headers(locked: WebServer) -> None:
    r = requests.get(
        locked.dicomweb + "/studies/1.2.3/metadata",
        auth=("vera", "viewer-pass-1"),
        headers={"Origin": ORIGIN},
    )
    assert r.status_code == 404
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.json()["status"] == 404


def test_basic_auth_and_roles(locked: WebServer) -> None:
    assert requests.get(locked.dicomweb + "/studies", auth=("vera", "wrong")).status_code == 401
    assert requests.get(locked.dicomweb + "/studies", auth=("nobody", "x")).status_code == 401
    r = requests.get(locked.dicomweb + "/studies", auth=("vera", "viewer-pass-1"))
    assert r.status_code == 200 and r.json()
    stow = {"Content-Type": "multipart/related; type=application/dicom; boundary=x"}
    body = b"--x\r\n\r\njunk\r\n--x--\r\n"
    viewer = requests.post(
        locked.dicomweb + "/studies", data=body, headers=stow, auth=("vera", "viewer-pass-1")
    )
    assert viewer.status_code == 403
    uploader = requests.post(
        locked.dicomweb + "/studies", data=body, headers=stow, auth=("ulla", "uploader-pass-1")
    )
    assert uploader.status_code == 409  # allowed in, and the junk instance refused


def test_session_login_for_the_ui(locked: WebServer) -> None:
    s = requests.Session()
    bad = s.post(locked.url + "/api/login", json={"user": "ada", "password": "nope"})
    assert bad.status_code == 401
    r = s.post(locked.url + "/api/login", json={"user": "ada", "password": "admin-pass-123"})
    assert r.status_code == 200 and r.json() == {"user": "ada", "roles": ["admin"]}
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert s.get(locked.url + "/api/me").json()["auth"] == "session"
    assert s.get(locked.dicomweb + "/studies").status_code == 200
    s.post(locked.url + "/api/logout")
    assert s.get(locked.dicomweb + "/studies").status_code == 401
    forged = requests.get(
        locked.dicomweb + "/studies", cookies={auth.SESSION_COOKIE: "eyJ1IjoiYWRhIn0.AAAA"}
    )
    assert forged.status_code == 401
    assert requests.post(locked.url + "/api/login", data="not json").status_code == 400


def test_bearer_tokens(locked: WebServer) -> None:
    r = requests.post(locked.url + "/api/tokens", auth=("vera", "viewer-pass-1"))
    token = r.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(locked.dicomweb + "/studies", headers=headers).status_code == 200
    tampered = {"Authorization": f"Bearer {token[:-2]}xx"}
    assert requests.get(locked.dicomweb + "/studies", headers=tampered).status_code == 401
    # A session cookie is not a bearer token and vice versa.
    assert (
        requests.get(locked.dicomweb + "/studies", cookies={auth.SESSION_COOKIE: token}).status_code
        == 401
    )


def test_audit_log_records_who_what_when_where(locked: WebServer) -> None:
    requests.get(
        locked.dicomweb + "/studies", params={"PatientID": "1CT1"}, auth=("vera", "viewer-pass-1")
    )
    requests.get(locked.dicomweb + "/studies/9.9.9/metadata")
    lines = [json.loads(x) for x in (locked.data_dir / "audit.log").read_text().splitlines()]
    search = next(x for x in lines if x.get("query") == "PatientID=1CT1")
    assert search["user"] == "vera" and search["auth"] == "basic"
    assert search["from"] == "127.0.0.1" and search["status"] == 200
    assert search["time"].endswith("Z") and search["method"] == "GET"
    denied = next(x for x in lines if x["path"] == "/dicom-web/studies/9.9.9/metadata")
    assert denied["user"] == "-" and denied["status"] == 401 and denied["study"] == "9.9.9"
    assert not any(x["path"] == "/api/status" for x in lines), "only patient data is audited"


def test_anonymous_loopback_by_default(tmp_path: Path) -> None:
    with web_server(tmp_path) as server:
        me = requests.get(server.url + "/api/me").json()
        assert me["auth"] == "anonymous" and "admin" in me["roles"]
        assert requests.post(server.url + "/api/tokens").status_code == 400
    a = auth.Authenticator(
        auth.UserStore(tmp_path / "u.json", FAST_HASHER), auth.Signer(tmp_path / "s"), "loopback"
    )
    assert a.authenticate({}, {}, "127.0.0.1") is not None
    assert a.authenticate({}, {}, "::1") is not None
    assert a.authenticate({}, {}, "192.168.1.9") is None
    assert a.authenticate({"authorization": "Basic !!"}, {}, "127.0.0.1") is None
    assert auth.Authenticator(a.users, a.signer, "any").authenticate({}, {}, "10.0.0.1")


def test_user_store_hashes_and_validates(tmp_path: Path) -> None:
    store = auth.UserStore(tmp_path / "users.json", FAST_HASHER)
    store.set_user("bob", "correct horse", ["viewer", "uploader"])
    raw = (tmp_path / "users.json").read_text()
    assert "correct horse" not in raw and "$argon2id$" in raw
    assert (tmp_path / "users.json").stat().st_mode & 0o777 == 0o600
    again = auth.UserStore(tmp_path / "users.json")
    assert again.verify("bob", "correct horse") == {"viewer", "uploader"}
    assert again.verify("bob", "wrong") is None
    for name, password, roles in (
        ("", "longenough", ["viewer"]),
        ("a:b", "longenough", ["viewer"]),
        ("c", "short", ["viewer"]),
        ("d", "longenough", ["root"]),
        ("e", "longenough", []),
    ):
        with pytest.raises(ValueError):
            store.set_user(name, password, roles)
    assert store.remove("bob") and not store.remove("bob")
    (tmp_path / "bad.json").write_text('{"users": {"x": {"hash": "plain", "roles": ["viewer"]}}}')
    with pytest.raises(ConfigError):
        auth.UserStore(tmp_path / "bad.json")


def test_configuration_keys(tmp_path: Path) -> None:
    s = config.load(env={}, cwd=tmp_path)
    assert s["http.anonymous"] == "loopback"
    assert s["http.cors_origins"] == []
    assert s["http.tls_cert"] == "" and s["http.tls_key"] == ""
    env = {"DUCKPACS_HTTP_ANONYMOUS": "OFF", "DUCKPACS_HTTP_CORS_ORIGINS": f"{ORIGIN}, *"}
    s = config.load(env=env, cwd=tmp_path)
    assert s["http.anonymous"] == "off" and s["http.cors_origins"] == [ORIGIN, "*"]
    (tmp_path / "duckpacs.toml").write_text(
        '[http]\nanonymous = "any"\ncors_origins = ["http://a.b:8080"]\n'
    )
    s = config.load(env={}, cwd=tmp_path)
    assert s["http.anonymous"] == "any" and s["http.cors_origins"] == ["http://a.b:8080"]
    for bad in ({"DUCKPACS_HTTP_ANONYMOUS": "maybe"}, {"DUCKPACS_HTTP_CORS_ORIGINS": "a.b/c"}):
        with pytest.raises(ConfigError, match="http\\."):
            config.load(env=bad, cwd=tmp_path)
    default_file = tmp_path / "d" / "duckpacs.toml"
    default_file.parent.mkdir()
    default_file.write_text(config.DEFAULT_FILE)
    assert config.load(env={}, cwd=default_file.parent)["http.anonymous"] == "loopback"


def test_https_when_a_certificate_is_configured(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
    )
    if made.returncode != 0:
        pytest.skip("openssl cannot make a test certificate")
    with web_server(tmp_path, http__tls_cert=str(cert), http__tls_key=str(key)) as server:
        assert server.url.startswith("https://")
        r = requests.get(server.url + "/api/status", verify=str(cert))
        assert r.status_code == 200
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(server.url.replace("https", "http") + "/api/status", timeout=5)


def test_https_with_an_unreadable_certificate_is_one_clear_error(tmp_path: Path) -> None:
    from duckpacs.errors import NetworkError

    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    with (
        pytest.raises(NetworkError, match="HTTP server failed to start"),
        web_server(
            tmp_path,
            http__tls_cert=str(tmp_path / "cert.pem"),
            http__tls_key=str(tmp_path / "key.pem"),
        ),
    ):
        pass
    with (
        pytest.raises(NetworkError, match="both http.tls_cert and http.tls_key"),
        web_server(tmp_path / "b", http__tls_cert=str(tmp_path / "cert.pem")),
    ):
        pass


def test_repeated_wrong_passwords_lock_the_address_out(tmp_path: Path) -> None:
    with web_server(tmp_path, users=USERS, http__anonymous="off") as server:
        for _ in range(10):
            r = requests.get(server.dicomweb + "/studies", auth=("vera", "guess"))
            assert r.status_code == 401
        locked_out = requests.get(server.dicomweb + "/studies", auth=("vera", "viewer-pass-1"))
        assert locked_out.status_code == 429
        assert int(locked_out.headers["retry-after"]) > 0
        login = requests.post(
            server.url + "/api/login", json={"user": "vera", "password": "viewer-pass-1"}
        )
        assert login.status_code == 429
    throttle = auth.Throttle(limit=2, window=60, lockout=60)
    throttle.failed("10.0.0.1")
    throttle.check("10.0.0.1")
    throttle.failed("10.0.0.1")
    with pytest.raises(auth.Throttled):
        throttle.check("10.0.0.1")
    throttle.check("10.0.0.2")  # other addresses are not affected
