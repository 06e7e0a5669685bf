"""The single-file executable on a clinic's machine (issue 14): `make test-dist`.

The file `make dist` built is copied alone into an empty folder and run there with nothing of
the build around it: `env -i HOME=<tmp> PATH=/usr/bin:/bin`. It must `init` an archive,
`import` files, `serve` (answer DCMTK's C-ECHO, take a C-STORE from DCMTK's storescu, serve
the study over WADO-RS, transcode a JPEG and a JPEG 2000 instance, render a frame, serve the
viewer's page), then `export`, `verify` and `reindex` the archive. Every run is traced with
strace: no file of the build's venv, of the source tree or of any Python installation outside
the executable may be opened.

The executable is ``$DUCKPACS_EXECUTABLE`` (`make test-dist` sets it to dist/duckpacs, and a
missing file then fails the run), else dist/duckpacs when it exists; these tests are marked
``dist`` and only `make test-dist` selects them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from io import BytesIO
from pathlib import Path

import pydicom
import pytest

from tests import synthetic
from tests.corpus import synthetic_folder
from tests.dimse_support import dcmtk_tool
from tests.helpers import free_port

pytestmark = pytest.mark.dist

REPO = Path(__file__).resolve().parents[2]
CALLING_AE = "MODALITY"
PEER = f"""
[peers.modality]
ae_title = "{CALLING_AE}"
host = "127.0.0.1"
port = 104
permissions = ["echo", "store"]
"""


def executable() -> Path:
    named = os.environ.get("DUCKPACS_EXECUTABLE")
    path = Path(named) if named else REPO / "dist" / "duckpacs"
    if not path.is_file():
        if named:
            pytest.fail(f"DUCKPACS_EXECUTABLE={named}: no such file (run `make dist` first)")
        pytest.skip("no dist/duckpacs: `make test-dist` builds and tests the executable")
    return path.resolve()


def foreign_prefixes() -> list[str]:
    """Where the executable must never read: the source tree (with the developers' .venv and
    the build's target/dist-venv in it) and every Python installation this test can see."""
    places = {REPO, Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    places |= {Path(sysconfig.get_paths()[k]) for k in ("stdlib", "purelib", "platlib")}
    places |= {Path(p) for p in ("/usr/lib/python3", "/usr/local/lib/python3.11")}
    places |= {Path(p) for p in Path("/usr/lib").glob("python3*")}
    found = {str(p) for p in places} | {str(p.resolve()) for p in places if p.exists()}
    return sorted(p.rstrip("/") + "/" for p in found)


# `1234  openat(AT_FDCWD, "/path", O_RDONLY|O_CLOEXEC) = 3` (failed opens end in `= -1 ENOENT`)
OPEN = re.compile(r'^\d+\s+(?:open|openat|openat2|execve)\((?:[^"]*)"([^"]+)".*\)\s+=\s+(\d+)')


def foreign_reads(trace: Path) -> list[str]:
    """Files under a foreign prefix that the traced processes opened successfully."""
    prefixes = foreign_prefixes()
    bad = []
    for line in trace.read_text(errors="replace").splitlines():
        match = OPEN.match(line)
        if match and any(match[1].startswith(p) or match[1] + "/" == p for p in prefixes):
            bad.append(line)
    return bad


@dataclass
class Clinic:
    """An empty folder with the executable copied into it, and how to run it there."""

    root: Path
    exe: Path
    strace: str
    traces: list[Path] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"HOME": str(self.root / "home"), "PATH": "/usr/bin:/bin"}

    def command(self, *args: str) -> list[str]:
        trace = self.root / "traces" / f"{len(self.traces):02d}-{args[0]}.txt"
        self.traces.append(trace)
        return [self.strace, "-f", "-qq", "-e", "trace=open,openat,openat2,execve",
                "-o", str(trace), str(self.exe), *args]  # fmt: skip

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            cwd=self.root / "site",
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"duckpacs {' '.join(args)}:\n{result.stderr}"
        self.check_last_trace()
        return result

    def check_last_trace(self) -> None:
        trace = self.traces[-1]
        assert trace.stat().st_size > 0, f"{trace}: strace recorded nothing"
        bad = foreign_reads(trace)
        assert not bad, f"{trace.name}: the executable read outside itself:\n" + "\n".join(bad)


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clinic]:
    source = executable()
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace not installed (Debian package strace; `make system-deps`)")
    root = tmp_path_factory.mktemp("clinic")
    for sub in ("home", "site", "traces"):
        (root / sub).mkdir()
    exe = root / "duckpacs"
    shutil.copy2(source, exe)
    yield Clinic(root, exe, strace)


def test_version_says_it_is_the_executable(clinic: Clinic) -> None:
    info = json.loads(clinic.run("version", "--json").stdout)
    assert info["runs_as"] == "executable"
    assert info["location"] == str(clinic.exe)
    assert info["build_profile"] == "release"


def test_help_of_every_command(clinic: Clinic) -> None:
    from duckpacs.cli.main import COMMANDS

    listing = clinic.run("--help").stdout
    for name in COMMANDS:
        assert name in listing
    for name in ("serve", "import", "migrate", "user", "verify"):
        assert f"usage: duckpacs {name}" in clinic.run(name, "--help").stdout


@dataclass
class Server:
    process: subprocess.Popen[str]
    dimse_port: int
    http_port: int
    log: list[str]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def stop(self) -> int:
        """SIGTERM, as systemd stops the unit; strace's child is the executable's launcher,
        which hands the signal to the interpreter it started."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        (launcher,) = children.read_text().split()
        os.kill(int(launcher), signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        self.log.extend(out.splitlines())
        return self.process.returncode


def start_server(clinic: Clinic, data: str) -> Server:
    dimse_port, http_port = free_port(), free_port()
    args = ("serve", "--data", data, "--bind", "127.0.0.1",
            "--port", str(dimse_port), "--http-port", str(http_port))  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        clinic.command(*args),
        cwd=clinic.root / "site",
        env=clinic.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Server(proc, dimse_port, http_port, [])
    assert proc.stdout is not None
    while time.monotonic() - started < 120:
        line = proc.stdout.readline()
        if not line:
            break
        server.log.append(line.rstrip())
        if "HTTP listening" in line:
            return server
    proc.kill()
    proc.communicate()
    raise AssertionError("serve did not start:\n" + "\n".join(server.log))


def dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [dcmtk_tool(tool), *args],
        env={"PATH": "/usr/bin:/bin", "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{tool}: {result.stdout}{result.stderr}"
    return result


def http_get(url: str, accept: str, auth: str) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept, "Authorization": auth})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, response.headers["Content-Type"], response.read()


def dicom_parts(content_type: str, body: bytes) -> list[pydicom.Dataset]:
    """The datasets of a multipart/related answer (PS3.18 8.7.1)."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = message_from_bytes(head + body)
    parts = message.get_payload()
    assert isinstance(parts, list)
    return [pydicom.dcmread(BytesIO(p.get_payload(decode=True))) for p in parts]


def test_init_import_serve_export_verify(clinic: Clinic) -> None:
    mr = sorted(synthetic_folder(synthetic.MR_SERIES).glob("*.dcm"))[:12]
    syntaxes = synthetic_folder(synthetic.SYNTAX_DIR)
    jpeg = pydicom.dcmread(syntaxes / "06_jpeg_lossless_sv1.dcm", stop_before_pixels=True)
    j2k = pydicom.dcmread(syntaxes / "09_j2k_lossless.dcm", stop_before_pixels=True)
    study = pydicom.dcmread(mr[0], stop_before_pixels=True).StudyInstanceUID
    for src in (*mr, syntaxes / jpeg.filename, syntaxes / j2k.filename):
        shutil.copy2(src, clinic.root / "site")
    shutil.copytree(syntaxes, clinic.root / "site" / "syntaxes")

    assert "initialised archive" in clinic.run("init", "--data", "archive").stdout
    with (clinic.root / "site" / "archive" / "duckpacs.toml").open("a") as f:
        f.write(PEER)
    clinic.run("user", "add", "reader", "--role", "viewer", "--data", "archive",
               "--password-stdin", stdin="s3cret-Pass\n")  # fmt: skip
    imported = json.loads(clinic.run("import", "--data", "archive", "syntaxes", "--json").stdout)
    assert imported["stored"] == len(synthetic.SYNTAXES), imported

    server = start_server(clinic, "archive")
    try:
        port = str(server.dimse_port)
        dcmtk("echoscu", "-aet", CALLING_AE, "-aec", "DUCKPACS", "127.0.0.1", port)
        files = [str(clinic.root / "site" / p.name) for p in mr]
        dcmtk("storescu", "-aet", CALLING_AE, "-aec", "DUCKPACS", "127.0.0.1", port, *files)
        auth = "Basic " + b64encode(b"reader:s3cret-Pass").decode()
        status, ctype, body = http_get(
            server.url(f"/dicom-web/studies/{study}"),
            'multipart/related; type="application/dicom"',
            auth,
        )
        assert status == 200
        got = dicom_parts(ctype, body)
        assert sorted(d.SOPInstanceUID for d in got) == sorted(
            pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in mr
        )
        # Transcoding to PS3.18's default syntax decodes JPEG (pylibjpeg-libjpeg) and
        # JPEG 2000 (pylibjpeg-openjpeg): the plugins pydicom finds by entry point.
        for ds in (jpeg, j2k):
            path = (f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                    f"/instances/{ds.SOPInstanceUID}")  # fmt: skip
            status, ctype, body = http_get(
                server.url(path), 'multipart/related; type="application/dicom"', auth
            )
            (part,) = dicom_parts(ctype, body)
            assert part.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert part.pixel_array.shape == (ds.Rows, ds.Columns)
        # A rendered frame (numpy and Pillow) and the viewer's page (package data).
        first = got[0]
        path = (f"/dicom-web/studies/{study}/series/{first.SeriesInstanceUID}"
                f"/instances/{first.SOPInstanceUID}/rendered")  # fmt: skip
        status, ctype, body = http_get(server.url(path), "image/png", auth)
        assert ctype == "image/png" and body.startswith(b"\x89PNG")
        status, ctype, body = http_get(server.url("/"), "text/html", auth)
        assert status == 200 and b"<html" in body.lower()
    finally:
        code = server.stop()
    assert code == 0, "\n".join(server.log)
    clinic.check_last_trace()

    exported = json.loads(
        clinic.run(
            "export", "--data", "archive", "--out", "out", "--json", f"StudyInstanceUID={study}"
        ).stdout  # fmt: skip
    )
    written = sorted((clinic.root / "site" / "out").rglob("*.dcm"))
    assert len(written) == len(mr), exported
    by_uid = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, written)}
    for src in mr:
        # The dataset storescu sent, element for element, behind our own meta group.
        original = pydicom.dcmread(src)
        assert by_uid[original.SOPInstanceUID] == original

    verified = json.loads(clinic.run("verify", "--data", "archive", "--json").stdout)
    assert verified["ok"] and verified["instances"] == len(mr) + len(synthetic.SYNTAXES)
    rebuilt = json.loads(clinic.run("reindex", "--data", "archive", "--json").stdout)
    assert rebuilt["instances"] == verified["instances"] and not rebuilt["skipped"]
