"""The operator's side of forwarding: `duckpacs send` through the queue (delivered by the
command when no server runs), `duckpacs queue`, `duckpacs protect`, and the admin page's
API and "send to..." under `duckpacs serve`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from duckpacs.archive.facade import Archive
from duckpacs.web.auth import UserStore
from tests.crash_support import duckpacs, start_server
from tests.helpers import free_port
from tests.routing_support import instance, peer_toml, receiver, wait_until, write_config
from tests.synthetic import encode, uid
from tests.web_support.server import browser_available, logged_in_page


def fill(data: Path, name: str, count: int = 3) -> str:
    study = uid("cli-web", name)
    with Archive.open(data) as archive:
        for n in range(1, count + 1):
            assert archive.store(encode(instance(study, n))).status == 0
    return study


def run_json(*args: str) -> tuple[int, object]:
    result = duckpacs(*args)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else None


def test_send_queue_and_protect_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    study = fill(data, "cli")
    down = free_port()
    with receiver(tmp_path / "recv", "RECV") as r:
        write_config(data, peer_toml("recv", "RECV", r.port) + peer_toml("down", "DOWN", down))
        code, out = run_json("send", "--to", "recv", f"StudyInstanceUID={study}", "--data",
                             str(data), "--json")  # fmt: skip
        assert code == 0, out
        assert out["completed"] == 3 and out["delivered_by"] == "this command"  # type: ignore[index]
        assert sum(len(c) for c in r.copies().values()) == 3
    code, out = run_json("send", "--to", "DOWN", f"StudyInstanceUID={study}", "--data",
                         str(data), "--json")  # fmt: skip
    assert code == 1 and out["waiting"] == 3  # type: ignore[index]
    code, summary = run_json("queue", "--data", str(data), "--json")
    rows = {row["destination"]: row for row in summary}  # type: ignore[union-attr]
    assert rows["recv"]["sent"] == 3 and rows["down"]["waiting"] == 3
    assert "DOWN" in rows["down"]["error"]
    code, jobs = run_json("queue", "list", "--to", "DOWN", "--data", str(data), "--json")
    assert [j["state"] for j in jobs] == ["waiting"] * 3  # type: ignore[union-attr]
    refused = duckpacs("queue", "drop", "--data", str(data))
    assert refused.returncode != 0 and "name the jobs to drop" in refused.stderr
    assert run_json("queue", "retry", "--to", "down", "--data", str(data), "--json")[1] == {
        "retry": 3
    }
    first = jobs[0]["id"]  # type: ignore[index]
    assert run_json("queue", "drop", str(first), "--data", str(data), "--json")[1] == {"drop": 1}
    assert run_json("queue", "drop", "--study", study, "--data", str(data), "--json")[1] == {
        "drop": 2
    }
    protected = duckpacs("protect", study, "--note", "court case", "--data", str(data))
    assert protected.returncode == 0 and "is protected" in protected.stdout
    code, listed = run_json("protect", "--list", "--json", "--data", str(data))
    assert [(e["study"], e["note"]) for e in listed] == [(study, "court case")]  # type: ignore[union-attr]
    assert duckpacs("unprotect", study, "--data", str(data)).returncode == 0
    assert run_json("protect", "--list", "--json", "--data", str(data))[1] == []
    unknown = duckpacs("protect", "1.2.3.4", "--data", str(data))
    assert unknown.returncode == 1 and "no study 1.2.3.4" in unknown.stderr
    audit = [json.loads(line) for line in (data / "audit.log").read_text().splitlines()]
    assert [a["method"] for a in audit] == ["PROTECT", "UNPROTECT"]


USERS = {"ada": ("admin-pass-123", ["admin"]), "vera": ("viewer-pass-1", ["viewer"])}


@pytest.fixture
def users(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    store = UserStore(data / "users.json")
    for name, (password, roles) in USERS.items():
        store.set_user(name, password, roles)
    return data


def test_admin_page_queue_and_send_to(tmp_path: Path, users: Path) -> None:
    data = users
    study = fill(data, "web")
    down = free_port()
    with receiver(tmp_path / "recv", "RECV") as r:
        write_config(data, '[http]\nanonymous = "off"\n' + peer_toml("recv", "RECV", r.port)
                     + peer_toml("down", "DOWN", down))  # fmt: skip
        server = start_server(data)
        base = f"http://127.0.0.1:{server.http_port}"
        ada, vera = ("ada", USERS["ada"][0]), ("vera", USERS["vera"][0])
        try:
            page = requests.get(base + "/admin", timeout=30)
            assert page.status_code == 200 and "/static/admin.js" in page.text
            assert requests.get(base + "/api/admin/queue", timeout=30).status_code == 401
            assert requests.get(base + "/api/admin/queue", auth=vera, timeout=30).status_code == 403
            send = f"{base}/api/studies/{study}/send"
            assert (
                requests.post(send, json={"to": "recv"}, auth=vera, timeout=30).status_code == 403
            )
            sent = requests.post(send, json={"to": "recv"}, auth=ada, timeout=30)
            assert sent.status_code == 202 and sent.json() == {"queued": 3, "to": "recv"}
            wait_until(lambda: len(r.copies()) == 3, "the study at the receiver")
            assert requests.post(send, json={"to": "down"}, auth=ada, timeout=30).status_code == 202
            # A peer nobody configured is the caller's mistake: 400 naming it, not a 500.
            unknown = requests.post(send, json={"to": " "}, auth=ada, timeout=30)
            assert unknown.status_code == 400 and "unknown peer" in unknown.json()["error"]

            def down_waiting() -> dict[str, object]:
                overview = requests.get(base + "/api/admin/queue", auth=ada, timeout=30).json()
                return {d["destination"]: d for d in overview["destinations"]}.get("down", {})

            wait_until(lambda: bool(down_waiting().get("error")), "the failed attempt")
            overview = requests.get(base + "/api/admin/queue?to=down", auth=ada, timeout=30).json()
            assert [j["state"] for j in overview["jobs"]] == ["waiting"] * 3
            assert overview["storage"]["stored_bytes"] > 0
            assert {p["name"] for p in overview["peers"]} == {"recv", "down"}
            bad = requests.post(base + "/api/admin/queue/retry", json={}, auth=ada, timeout=30)
            assert bad.status_code == 400
            dropped = requests.post(base + "/api/admin/queue/drop", json={"destination": "down"},
                                    auth=ada, timeout=30)  # fmt: skip
            assert dropped.json() == {"dropped": 3}
        finally:
            server.stop()
    audit = [json.loads(line) for line in (data / "audit.log").read_text().splitlines()]
    sends = [(a["user"], a["status"]) for a in audit if a["path"].endswith("/send")]
    assert sends == [("vera", 403), ("ada", 202), ("ada", 202), ("ada", 400)]
    assert all(a["study"] == study for a in audit if a["path"].endswith("/send"))


@pytest.mark.skipif(not browser_available(), reason="needs playwright and /usr/bin/chromium")
def test_browser_send_to_and_the_queue_page(tmp_path: Path, users: Path) -> None:
    data = users
    study = fill(data, "browser")
    with receiver(tmp_path / "recv", "RECV") as r:
        write_config(data, '[http]\nanonymous = "off"\n' + peer_toml("recv", "RECV", r.port))
        server = start_server(data)
        base = f"http://127.0.0.1:{server.http_port}"
        try:
            with logged_in_page(base, "ada", USERS["ada"][0]) as page:
                page.goto(f"{base}/#/study/{study}")
                page.wait_for_selector("#send-box:not([hidden])")
                assert page.input_value("#send-to") == "recv"
                page.click("#send")
                page.wait_for_function(
                    "() => document.getElementById('status').textContent.startsWith('Queued 3')"
                )
                wait_until(lambda: len(r.copies()) == 3, "the study at the receiver")
                page.goto(base + "/admin")
                page.wait_for_function(
                    "() => (() => { const c = document.querySelector('#destinations tbody tr');"
                    " return c && c.cells[0].textContent === 'recv'"
                    " && c.cells[4].textContent === '3'; })()"
                )
                assert "stored" in page.text_content("#storage")
        finally:
            server.stop()
