"""The product path end to end: `duckpacs serve` (index owner + worker processes, the Rust
store, the DuckDB index) driven by DCMTK and by `duckpacs echo` / `duckpacs send`."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from duckpacs.archive import part10
from tests.corpus import SHARED_CORPUS, mr_series_sets, synthetic_dir
from tests.dimse_support import SCU_AE, dcmtk_tool
from tests.helpers import dcmtk_env, duckpacs_cmd, free_port, running_server


def dataset_sha(data: bytes) -> str:
    return hashlib.sha256(data[part10.split(data).dataset_offset :]).hexdigest()


def sources() -> list[Path]:
    """Two of pydicom's files, then 30 slices of the synthetic MR series and of the shared
    corpus's Toshiba series when present."""
    files = [Path(str(get_testdata_file(n))) for n in ("CT_small.dcm", "MR_small.dcm")]
    for series in mr_series_sets():
        files += series[:30]
    return files


def write_config(data: Path, dest_port: int) -> None:
    data.mkdir(parents=True, exist_ok=True)
    (data / "duckpacs.toml").write_text(
        f'[peers.scu]\nae_title = "{SCU_AE}"\nhost = "127.0.0.1"\nport = {dest_port}\n'
    )


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env=dcmtk_env(), capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.interop
def test_serve_stores_finds_and_returns_identical_bytes(tmp_path: Path) -> None:
    storescu, getscu = dcmtk_tool("storescu"), dcmtk_tool("getscu")
    findscu, storescp = dcmtk_tool("findscu"), dcmtk_tool("storescp")
    data, dest_port = tmp_path / "archive", free_port()
    write_config(data, dest_port)
    files = sources()
    expected = {}
    for f in files:
        expected[str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)] = dataset_sha(
            f.read_bytes()
        )
    with running_server(data) as server:
        port = str(server.dimse_port)
        sent = run(
            storescu, "-aet", SCU_AE, "-aec", "DUCKPACS", "127.0.0.1", port, *map(str, files)
        )
        assert sent.returncode == 0, sent.stderr
        # Visible to C-FIND as soon as C-STORE succeeded.
        found = tmp_path / "found"
        found.mkdir()
        result = run(
            findscu, "-aet", SCU_AE, "-aec", "DUCKPACS", "-S", "-X", "-od", str(found),
            "-k", "QueryRetrieveLevel=IMAGE", "-k", "SOPInstanceUID", "-k", "EchoTime",
            "127.0.0.1", port,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert {str(dcmread(f).SOPInstanceUID) for f in found.iterdir()} == set(expected)
        got = tmp_path / "got"
        got.mkdir()
        for study in {str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files}:
            result = run(
                getscu, "-aet", SCU_AE, "-aec", "DUCKPACS", "-S", "+B", "-od", str(got),
                "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                "127.0.0.1", port,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
        back = {
            str(dcmread(f, stop_before_pixels=True).SOPInstanceUID): dataset_sha(f.read_bytes())
            for f in got.iterdir()
        }
        corpus_uids = {
            str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            for f in files
            if f.is_relative_to(synthetic_dir()) or f.is_relative_to(SHARED_CORPUS)
        }
        assert set(back) == set(expected)
        assert {u: back[u] for u in corpus_uids} == {u: expected[u] for u in corpus_uids}

        echo = subprocess.run(
            duckpacs_cmd("echo", f"DUCKPACS@127.0.0.1:{port}", "--data", str(data), "--json"),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert echo.returncode == 0, echo.stderr
        assert json.loads(echo.stdout)["status"] == 0

        moved = tmp_path / "sent"
        moved.mkdir()
        scp = subprocess.Popen(
            [storescp, "-aet", SCU_AE, "+B", "-od", str(moved), "--accept-all", str(dest_port)],
            env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            mr = dcmread(get_testdata_file("MR_small.dcm"))
            send = subprocess.run(
                duckpacs_cmd("send", "--to", "scu", f"PatientID={mr.PatientID}",
                             "--data", str(data), "--json"),
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert send.returncode == 0, send.stderr
            assert json.loads(send.stdout)["completed"] == 1
        finally:
            scp.terminate()
            scp.wait(10)
        (received,) = list(moved.iterdir())
        assert str(dcmread(received).SOPInstanceUID) == mr.SOPInstanceUID

    # The index and the store survive a restart.
    with running_server(data) as server:
        found2 = tmp_path / "found2"
        found2.mkdir()
        result = run(
            findscu, "-aet", SCU_AE, "-aec", "DUCKPACS", "-S", "-X", "-od", str(found2),
            "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
            "127.0.0.1", str(server.dimse_port),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        studies = {str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files}
        assert {str(dcmread(f).StudyInstanceUID) for f in found2.iterdir()} == studies


def test_second_archive_cannot_share_the_dimse_port(tmp_path: Path) -> None:
    write_config(tmp_path / "a", free_port())
    with running_server(tmp_path / "a") as server:
        result = subprocess.run(
            duckpacs_cmd("serve", "--data", str(tmp_path / "b"), "--port", str(server.dimse_port),
                         "--http-port", str(free_port())),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode != 0
    assert "duckpacs: error: cannot listen" in result.stderr
