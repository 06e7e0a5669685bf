"""A running web server over a folder of test files, for the web tests."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from argon2 import PasswordHasher
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from duckpacs import config
from duckpacs.server.http import HttpServer
from duckpacs.web.auth import UserStore
from tests.web_support.folder_reader import FolderReader

# Always-present files from the pydicom wheel, chosen for variety: native 16-bit CT with
# rescale, MR, JPEG 2000, 30-frame YBR JPEG, palette colour, RGB, multi-frame RT dose, RLE.
TEST_FILES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "examples_ybr_color.dcm",
    "examples_palette.dcm",
    "examples_rgb_color.dcm",
    "rtdose.dcm",
    "SC_rgb_rle_2frame.dcm",
)


def testdata(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


def make_corpus(folder: Path) -> dict[str, Path]:
    """Copy the test files and derive two more: a MONOCHROME1 CT and an MR with a VOI LUT."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in TEST_FILES:
        out[name] = folder / name
        shutil.copy(testdata(name), out[name])
    ds = pydicom.dcmread(testdata("CT_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    out["mono1"] = folder / "mono1.dcm"
    ds.save_as(out["mono1"])
    ds = pydicom.dcmread(testdata("MR_small.dcm"))
    del ds.WindowCenter, ds.WindowWidth
    item = pydicom.Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = [i * i // 256 for i in range(4096)]  # a non-linear curve
    item["LUTData"].VR = "US"
    ds.VOILUTSequence = [item]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    out["voilut"] = folder / "voilut.dcm"
    ds.save_as(out["voilut"])
    ds = pydicom.dcmread(testdata("MR_small.dcm"))  # large binary values, one nested
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.private_block(0x0029, "DUCKPACS TEST", create=True).add_new(
        0x01, "OB", bytes(range(256)) * 8
    )
    item = pydicom.Dataset()
    item.private_block(0x0029, "DUCKPACS TEST", create=True).add_new(0x02, "OB", b"\x07" * 3000)
    ds.ReferencedImageSequence = [item]
    out["bulky"] = folder / "bulky.dcm"
    ds.save_as(out["bulky"])
    study, series = generate_uid(), generate_uid()
    for n in range(1, 5):  # a small CT series to scroll through, each slice different
        ds = pydicom.dcmread(testdata("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID, ds.PatientName, ds.InstanceNumber = "SERIES4", "Test^Series", n
        pixels = ds.pixel_array
        ds.PixelData = np.roll(pixels, 16 * n, axis=1).tobytes()
        out[f"slice{n}"] = folder / f"slice{n}.dcm"
        ds.save_as(out[f"slice{n}"])
    return out


@dataclass
class WebServer:
    url: str
    data_dir: Path
    reader: FolderReader
    files: dict[str, Path]
    http: HttpServer

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicom-web"


FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)


@contextmanager
def web_server(
    tmp_path: Path,
    users: dict[str, tuple[str, list[str]]] | None = None,
    wrap: Callable[[FolderReader], Any] | None = None,
    **overrides: Any,
) -> Iterator[WebServer]:
    """Start the web layer on a free loopback port over a fresh test corpus.

    ``users`` maps names to (password, roles); ``wrap`` turns the folder reader into the
    reader the server uses; ``overrides`` are configuration keys with
    ``__`` for the dot (``http__anonymous="off"``).
    """
    files = make_corpus(tmp_path / "corpus")
    reader = FolderReader(tmp_path / "corpus")
    data = tmp_path / "data"
    store = UserStore(data / "users.json", hasher=FAST_HASHER)
    for name, (password, roles) in (users or {}).items():
        store.set_user(name, password, roles)
    flags = {
        "archive.data_dir": str(data),
        **{k.replace("__", "."): v for k, v in overrides.items()},
    }
    settings = config.load(env={}, cwd=tmp_path, flags=flags)
    archive = reader if wrap is None else wrap(reader)
    server = HttpServer("127.0.0.1", 0, lambda: {"ok": True}, settings=settings, archive=archive)
    server.start()
    host, port = server.address
    try:
        yield WebServer(f"{server.scheme}://{host}:{port}", data, reader, files, server)
    finally:
        server.stop()


CHROMIUM = "/usr/bin/chromium"


def browser_available() -> bool:
    """Playwright and Debian's Chromium, for the end-to-end browser tests."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists()


@contextmanager
def logged_in_page(base: str, user: str, password: str) -> Iterator[Any]:
    """A Chromium page of the web UI at ``base``, logged in as ``user`` with the study list
    shown (Playwright, Debian's Chromium); the browser closes on leaving."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(base + "/")
            page.fill("#login-user", user)
            page.fill("#login-password", password)
            page.click("#login-submit")
            page.wait_for_selector("#studies tbody tr")
            yield page
        finally:
            browser.close()
