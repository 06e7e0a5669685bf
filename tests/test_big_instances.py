"""Instances larger than memory should need, through the server's DICOM paths and import
(issues 13 and 25): a C-STORE is spooled to disk and stored as a stream, a C-GET sends it
as a stream, import stores a large file from disk. Each path is checked from the outside
(DCMTK as the modality and the workstation) for byte-exact data, and the server's peak RSS
(VmHWM) must grow by much less than the instance."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from duckpacs.archive import part10
from duckpacs.web import rendering
from duckpacs.web.dicomweb.metadata import instance_json
from tests import big_instance
from tests.dimse_support import dcmtk_tool
from tests.helpers import dcmtk_env, running_server
from tests.synthetic import uid

# 96 MB: above the C-STORE spool threshold (32 MiB), the store's stream threshold (64 MiB)
# and the C-GET stream threshold (8 MiB of stored bytes).
FRAMES, ROWS, COLS = 48, 1024, 1024
SIZE = FRAMES * ROWS * COLS * 2
# Whatever the path, it may not hold the instance in memory once.
BOUND = SIZE // 3

pytestmark = pytest.mark.interop


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} for {pid}")


def _reset_peak(pid: int) -> None:
    # Writing 5 resets VmHWM to the current RSS (proc(5)).
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _dataset_sha(path: Path) -> str:
    """SHA-256 of everything after the meta group, read in pieces."""
    with path.open("rb") as f:
        head = f.read(1 << 20)
        h = hashlib.sha256(head[part10.split(head).dataset_offset :])
        while piece := f.read(1 << 20):
            h.update(piece)
    return h.hexdigest()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.dcm"
    big_instance.write(path, FRAMES, ROWS, COLS)
    return path


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=dcmtk_env(), capture_output=True, text=True, timeout=300)


def test_c_store_and_c_get_of_a_large_instance_stream(tmp_path: Path, big_file: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "duckpacs.toml").write_text("[dimse]\naccept_any = true\n")
    with running_server(data) as server:
        pid = server.process.pid
        time.sleep(0.5)
        _reset_peak(pid)
        idle = _status(pid, "VmRSS")
        port = str(server.dimse_port)
        stored = _run(
            [dcmtk_tool("storescu"), "-aec", "DUCKPACS", "127.0.0.1", port, str(big_file)]
        )
        assert stored.returncode == 0, stored.stderr
        store_growth = _status(pid, "VmHWM") - idle
        assert not any((tmp_path / "data" / "store" / "spool").glob("*"))

        out = tmp_path / "got"
        out.mkdir()
        _reset_peak(pid)
        idle = _status(pid, "VmRSS")
        got = _run([dcmtk_tool("getscu"), "-aec", "DUCKPACS", "-S",
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid('big-study')}",
                    "-od", str(out), "127.0.0.1", port])  # fmt: skip
        assert got.returncode == 0, got.stderr
        get_growth = _status(pid, "VmHWM") - idle

        _reset_peak(pid)
        idle = _status(pid, "VmRSS")
        wado = tmp_path / "wado.bin"
        boundary = _wado_instance(server.http_port, wado)
        wado_growth = _status(pid, "VmHWM") - idle

        _reset_peak(pid)
        idle = _status(pid, "VmRSS")
        implicit = tmp_path / "implicit.bin"
        implicit_boundary = _wado_instance(server.http_port, implicit, "1.2.840.10008.1.2")
        implicit_growth = _status(pid, "VmHWM") - idle

        _reset_peak(pid)
        idle = _status(pid, "VmRSS")
        metadata = _get_json(server.http_port, "/metadata")
        metadata_growth = _status(pid, "VmHWM") - idle

        _reset_peak(pid)
        idle = _status(pid, "VmRSS")
        png = _rendered_frame(server.http_port, 30)
        rendered_growth = _status(pid, "VmHWM") - idle
    (copy,) = list(out.iterdir())
    # As stored (Explicit VR LE), or in Implicit VR LE when that is all the requestor took
    # (the header re-encoded, the pixels streamed as stored): the same attributes either way.
    got_ds, sent_ds = pydicom.dcmread(copy), pydicom.dcmread(big_file)
    assert got_ds.file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
    assert got_ds.PixelData == sent_ds.PixelData
    assert [e.tag for e in got_ds] == [e.tag for e in sent_ds]
    del got_ds, sent_ds
    assert store_growth < BOUND, f"C-STORE grew the server by {store_growth >> 20} MB"
    assert get_growth < BOUND, f"C-GET grew the server by {get_growth >> 20} MB"
    body = _part_body(wado, boundary, tmp_path / "wado.dcm")
    assert _dataset_sha(body) == _dataset_sha(big_file)
    assert wado_growth < BOUND, f"WADO-RS grew the server by {wado_growth >> 20} MB"
    # Asked in Implicit VR Little Endian: the header re-encoded, the pixels streamed.
    switched = pydicom.dcmread(_part_body(implicit, implicit_boundary, tmp_path / "imp.dcm"))
    original = pydicom.dcmread(big_file)
    assert switched.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert switched.PixelData == original.PixelData
    assert [(e.tag, e.value) for e in switched if e.tag != 0x7FE00010] == [
        (e.tag, e.value) for e in original if e.tag != 0x7FE00010
    ]
    del switched, original
    assert implicit_growth < BOUND, (
        f"switching syntax grew the server by {implicit_growth >> 20} MB"
    )
    # The metadata made from the header alone equals the one made from the whole instance.
    whole = json.loads(instance_json(body.read_bytes(), "1.2.840.10008.1.2.1"))
    assert metadata == [whole]
    assert metadata_growth < BOUND, f"metadata grew the server by {metadata_growth >> 20} MB"
    expected, _ = rendering.render(pydicom.dcmread(big_file), 30, media_type="image/png")
    assert np.array_equal(_pixels(png), _pixels(expected))
    # Windowing one 1024x1024 frame takes ~30 MB of float arrays whatever the instance's
    # size; reading the instance whole would take more than its 96 MB.
    assert rendered_growth < 2 * BOUND, f"rendering grew the server by {rendered_growth >> 20} MB"


def _instance_url(port: int, suffix: str = "") -> str:
    """The big instance's WADO-RS URL (PS3.18 10.4), with ``suffix`` after it."""
    study, series, sop = uid("big-study"), uid("big-series"), uid("big", FRAMES, ROWS, COLS)
    return (f"http://127.0.0.1:{port}/dicom-web/studies/{study}/series/{series}"
            f"/instances/{sop}{suffix}")  # fmt: skip


def _get_json(port: int, suffix: str) -> object:
    url = _instance_url(port, suffix)
    request = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def _rendered_frame(port: int, frame: int) -> bytes:
    """WADO-RS Retrieve Rendered Frame (PS3.18 10.4.1.1.3) as PNG."""
    url = _instance_url(port, f"/frames/{frame}/rendered")
    request = urllib.request.Request(url, headers={"Accept": "image/png"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return bytes(response.read())


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def _wado_instance(port: int, target: Path, syntax: str | None = None) -> bytes:
    """WADO-RS Retrieve Instance (PS3.18 10.4) into ``target``; returns the boundary."""
    url = _instance_url(port)
    accept = 'multipart/related; type="application/dicom"'
    if syntax is not None:
        accept += f"; transfer-syntax={syntax}"
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=300) as response, target.open("wb") as f:
        content_type = response.headers["Content-Type"]
        while piece := response.read(1 << 20):
            f.write(piece)
    return content_type.split("boundary=")[1].split(";")[0].strip('"').encode()


def _part_body(path: Path, boundary: bytes, target: Path) -> Path:
    """The one part's body of a multipart/related file, copied to ``target``."""
    closing = b"\r\n--" + boundary + b"--\r\n"
    with path.open("rb") as f, target.open("wb") as out:
        head = f.read(4096)
        start = head.index(b"\r\n\r\n") + 4
        end = path.stat().st_size - len(closing)
        f.seek(end)
        assert f.read() == closing
        f.seek(start)
        left = end - start
        while left:
            piece = f.read(min(left, 1 << 20))
            out.write(piece)
            left -= len(piece)
    return target


def _peak(*args: str) -> int:
    """Peak RSS of one ``duckpacs`` command in a process of its own (which must succeed)."""
    code = (
        "import sys\n"
        "from duckpacs.cli.main import main\n"
        "rc = main(sys.argv[1:])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(rc, int(hwm.split()[1]) * 1024)\n"
    )
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    rc, peak = run.stdout.strip().splitlines()[-1].split()
    assert rc == "0", run.stdout
    return int(peak)


def _import_peak(data: Path, source: Path) -> int:
    return _peak("import", "--data", str(data), "--json", str(source))


def _export_peak(data: Path, out: Path) -> int:
    return _peak("export", "--data", str(data), "--out", str(out))


def test_import_of_a_large_file_stores_it_from_disk(tmp_path: Path, big_file: Path) -> None:
    """The peak of importing the large file, beside the peak of importing a small one
    (opening the archive costs the same for both)."""
    small = Path(get_testdata_file("CT_small.dcm"))
    growth = _import_peak(tmp_path / "big", big_file) - _import_peak(tmp_path / "small", small)
    assert growth < BOUND, f"import of {SIZE >> 20} MB took {growth >> 20} MB more than a small one"


def test_export_of_a_large_instance_streams(tmp_path: Path, big_file: Path) -> None:
    data = tmp_path / "data"
    _import_peak(data, big_file)
    small = tmp_path / "small"
    _import_peak(small, Path(get_testdata_file("CT_small.dcm")))
    growth = _export_peak(data, tmp_path / "out") - _export_peak(small, tmp_path / "out-small")
    assert growth < BOUND, f"export of {SIZE >> 20} MB took {growth >> 20} MB more than a small one"
    (copy,) = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert copy.relative_to(tmp_path / "out").parts[0] == "BIG"  # patient/study/series/...
    assert _sha(copy) == _sha(big_file)


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(1 << 20):
            h.update(piece)
    return h.hexdigest()


def test_modify_of_a_large_instance_rewrites_its_header_only(
    tmp_path: Path, big_file: Path
) -> None:
    """A correction of the large instance keeps memory bounded (its header is re-encoded,
    the pixel data streamed from the store), keeps the pixel data bytes, and the received
    file stays available with `export --original`."""
    data, small = tmp_path / "big", tmp_path / "small"
    _import_peak(data, big_file)
    small_file = Path(get_testdata_file("CT_small.dcm"))
    _import_peak(small, small_file)

    def study_of(path: Path) -> str:
        return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)

    def modify_peak(where: Path, study: str) -> int:
        return _peak("modify", "--study", study, "PatientName=Big^Corrected", "--yes",
                     "--data", str(where))  # fmt: skip

    growth = modify_peak(data, study_of(big_file)) - modify_peak(small, study_of(small_file))
    assert growth < BOUND, f"modify of {SIZE >> 20} MB took {growth >> 20} MB more than a small one"
    _peak("export", "--data", str(data), "--out", str(tmp_path / "now"))
    _peak("export", "--original", "--data", str(data), "--out", str(tmp_path / "orig"))
    (now,) = [p for p in (tmp_path / "now").rglob("*") if p.is_file()]
    (orig,) = [p for p in (tmp_path / "orig").rglob("*") if p.is_file()]
    assert _sha(orig) == _sha(big_file)
    header = pydicom.dcmread(now, stop_before_pixels=True)
    assert str(header.PatientName) == "Big^Corrected"
    with now.open("rb") as a, big_file.open("rb") as b:  # pixel data onward byte for byte
        a.seek(now.stat().st_size - SIZE)
        b.seek(big_file.stat().st_size - SIZE)
        while piece := a.read(1 << 20):
            assert piece == b.read(1 << 20)
