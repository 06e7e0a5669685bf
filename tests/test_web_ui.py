"""The web UI: static files shipped in the package, study zip download, the `user` command,
and (when Playwright and Debian's Chromium are installed) an end-to-end browser test."""

from __future__ import annotations

import io
import json
import os
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from tests.helpers import duckpacs_cmd
from tests.web_support.server import CHROMIUM, WebServer, browser_available, web_server


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    users = {"rad": ("radiology-1", ["viewer", "uploader"])}
    with web_server(
        Path(tmp_path_factory.mktemp("ui")), users=users, http__anonymous="off"
    ) as server:
        yield server


def test_static_files_are_served(ui: WebServer) -> None:
    index = requests.get(ui.url + "/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert '<script type="module" src="/static/app.js">' in index.text
    modules = ("app.js", "common.js", "dicom.js", "series.js", "viewer.js", "viewport.js")
    for name, kind in [(m, "javascript") for m in modules] + [("style.css", "text/css")]:
        r = requests.get(f"{ui.url}/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"], name
    assert requests.get(ui.url + "/static/missing.js").status_code == 404


def test_study_download_as_zip(ui: WebServer) -> None:
    path = ui.files["MR_small.dcm"]
    study = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
    url = f"{ui.url}/api/studies/{study}/archive.zip"
    assert requests.get(url).status_code == 401
    r = requests.get(url, auth=("rad", "radiology-1"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        contents = {Path(n).name: zf.read(n) for n in zf.namelist()}
    in_study = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p.read_bytes()
        for p in ui.files.values()
        if str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) == study
    }
    assert contents == {f"{uid}.dcm": data for uid, data in in_study.items()}
    missing = requests.get(f"{ui.url}/api/studies/1.2.3/archive.zip", auth=("rad", "radiology-1"))
    assert missing.status_code == 404


def test_user_command(tmp_path: Path) -> None:
    data = tmp_path / "archive"
    env = {**os.environ}

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            duckpacs_cmd("user", *args, "--data", str(data)),
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    added = run(
        "add",
        "alice",
        "--role",
        "viewer",
        "--role",
        "uploader",
        "--password-stdin",
        stdin="a-long-password\n",
    )
    assert added.returncode == 0, added.stderr
    listed = run("list", "--json")
    assert json.loads(listed.stdout) == {"alice": ["uploader", "viewer"]}
    short = run("add", "bob", "--role", "viewer", "--password-stdin", stdin="short\n")
    assert short.returncode != 0 and short.stderr.startswith("duckpacs: error: passwords")
    assert "Traceback" not in short.stderr
    assert run("remove", "alice").returncode == 0
    gone = run("remove", "alice")
    assert gone.returncode != 0 and "no such user" in gone.stderr


@pytest.mark.skipif(not browser_available(), reason="needs playwright and /usr/bin/chromium")
def test_browser_login_search_view_and_window_level(ui: WebServer, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    artifacts = Path(os.environ.get("DUCKPACS_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        # The viewer runs under the server's Content-Security-Policy: nothing it does may
        # be blocked (Chromium reports each refusal on the console).
        blocked: list[str] = []
        page.on("console", lambda m: blocked.append(m.text) if "Security Policy" in m.text else 0)
        try:
            page.goto(ui.url + "/")
            page.fill("#login-user", "rad")
            page.fill("#login-password", "radiology-1")
            page.click("#login-submit")
            page.wait_for_selector("#studies tbody tr")
            page.fill("#q-id", "SERIES4")
            page.click("#search-button")
            page.wait_for_function(
                "() => (() => { const rows = document.querySelectorAll('#studies tbody tr');"
                " return rows.length === 1 && rows[0].cells[1].textContent === 'SERIES4'; })()"
            )
            page.click("#studies tbody tr")  # opens the study in the viewer
            page.wait_for_selector("#series-list .series img")
            page.wait_for_function(
                "() => document.getElementById('position').textContent === '1 / 4'"
            )
            page.wait_for_function(
                "() => document.getElementById('wl').textContent.startsWith('W ')"
            )
            before = _canvas_pixels(page)
            page.focus(".viewport.active canvas")
            page.keyboard.press("ArrowDown")
            page.wait_for_function(
                "() => document.getElementById('position').textContent === '2 / 4'"
            )
            page.wait_for_function(f"() => ({CANVAS_HASH})() !== {before!r}", timeout=15000)
            scrolled = _canvas_pixels(page)
            assert scrolled != before, "scrolling shows another slice"
            window_text = page.text_content("#wl")
            box = page.locator(".viewport.active canvas").bounding_box()
            assert box is not None
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx, cy)
            page.mouse.down()
            page.mouse.move(cx - 150, cy + 120, steps=8)
            page.mouse.up()
            page.wait_for_function(
                f"() => document.getElementById('wl').textContent !== {window_text!r}"
            )
            # The new rendering arrives asynchronously: wait until the canvas differs.
            page.wait_for_function(f"() => ({CANVAS_HASH})() !== {scrolled!r}", timeout=15000)
            assert _canvas_pixels(page) != scrolled, "window/level changes the canvas"
            page.screenshot(path=str(artifacts / "viewer.png"))
            # Upload a zip (one file deflated, one stored) through STOW-RS, then find it.
            zipped = tmp_path / "upload.zip"
            names = _two_new_instances(tmp_path)
            with zipfile.ZipFile(zipped, "w") as zf:
                zf.write(names[0], "a/one.dcm", compress_type=zipfile.ZIP_DEFLATED)
                zf.write(names[1], "two.dcm", compress_type=zipfile.ZIP_STORED)
                zf.writestr("README.txt", "not DICOM")
            page.goto(ui.url + "/#/")
            page.set_input_files("#upload", str(zipped))
            page.wait_for_function(
                "() => document.getElementById('status').textContent.startsWith('uploaded:')"
            )
            assert page.text_content("#status") == ("uploaded: 2 stored, 0 refused, 1 not DICOM")
            page.fill("#q-id", "UPLOADED")
            page.fill("#q-modality", "MR")
            page.click("#search-button")
            page.wait_for_function(  # the previous search's row may still be on screen
                "() => (() => { const rows = document.querySelectorAll('#studies tbody tr');"
                " return rows.length === 1 && rows[0].cells[1].textContent === 'UPLOADED'; })()"
            )
            assert "2" in page.text_content("#studies tbody tr td:last-child")
            assert blocked == [], blocked
        finally:
            browser.close()


def _two_new_instances(folder: Path) -> list[Path]:
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    study = generate_uid()
    paths = []
    for n in (1, 2):
        path = get_testdata_file("MR_small.dcm")
        assert path is not None
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID = "UPLOADED"
        paths.append(folder / f"new{n}.dcm")
        ds.save_as(paths[-1])
    return paths


CANVAS_HASH = (
    "() => { const c = document.querySelector('.viewport.active canvas');"
    " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
    " let h = 0; for (let i = 0; i < d.length; i += 7) h = (h * 31 + d[i]) | 0;"
    " return String(h); }"
)


def _canvas_pixels(page: object) -> str:
    return page.evaluate(CANVAS_HASH)  # type: ignore[attr-defined, no-any-return]
