"""DCMTK's tools against the DIMSE server: echoscu, storescu, findscu, getscu, movescu.

Every instance sent by storescu and fetched back by getscu (or moved to a storescp) must
have a byte-identical dataset. DCMTK runs with TCP_NODELAY=1 (FACTS.md section 1).
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from duckpacs.archive import Archive, part10
from tests.corpus import SHARED_CORPUS, mr_series_sets, synthetic_dir
from tests.dimse_support import DEST_AE, SCU_AE, dcmtk_tool, default_peers
from tests.helpers import dcmtk_env, free_port

pytestmark = pytest.mark.interop

PYDICOM_FILES = ["CT_small.dcm", "MR_small.dcm", "SC_rgb_jpeg_dcmtk.dcm", "rtplan.dcm"]
MR_SUBSET = 60  # per series: many C-STOREs in one association; the bench sends all


def dataset_sha(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha256(data[part10.split(data).dataset_offset :]).hexdigest()


def sources() -> list[Path]:
    """A few of pydicom's files, then the synthetic MR series and the shared corpus's Toshiba
    series when present (one study each)."""
    files = [Path(str(get_testdata_file(n))) for n in PYDICOM_FILES]
    for series in mr_series_sets():
        files += series[:MR_SUBSET]
    return files


def run(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, env=dcmtk_env(), timeout=timeout, check=False
    )


@pytest.fixture
def served(
    settings_factory: Any, running_server: Any, archive_factory: Any
) -> Iterator[tuple[Archive, int, int]]:
    dest_port = free_port()
    archive = archive_factory()
    _server, port = running_server(archive, settings_factory(peers=default_peers(dest_port)))
    yield archive, port, dest_port


def stored_sha(archive: Archive, uid: str) -> str:
    ref = archive.locate("IMAGE", {"SOPInstanceUID": uid})[0]
    data, _ts = archive.read_dataset(ref)
    return hashlib.sha256(data).hexdigest()


def corpus_file(path: Path) -> bool:
    # storescu re-encodes what it sends; on pydicom's deliberately odd test files that changes
    # bytes before we ever see them, so those are compared with what we received instead. The
    # synthetic and the vendor files are well formed: they arrive exactly as on disk.
    return path.is_relative_to(synthetic_dir()) or path.is_relative_to(SHARED_CORPUS)


# storescu proposes uncompressed syntaxes unless told which compressed one a file needs.
PROPOSE = {"1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.70": "-xs"}


def storescu(port: int, files: list[Path]) -> None:
    tool = dcmtk_tool("storescu")
    groups: dict[str, list[str]] = {}
    for f in files:
        ts = str(dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        groups.setdefault(PROPOSE.get(ts, "-x="), []).append(str(f))
    for option, group in groups.items():
        result = run(
            tool, option, "-aet", SCU_AE, "-aec", "DUCKPACS", "127.0.0.1", str(port), *group
        )
        assert result.returncode == 0, result.stderr


def test_echoscu(served: tuple[Archive, int, int]) -> None:
    tool = dcmtk_tool("echoscu")
    _archive, port, _ = served
    result = run(tool, "-aet", SCU_AE, "-aec", "DUCKPACS", "127.0.0.1", str(port))
    assert result.returncode == 0, result.stderr
    wrong = run(tool, "-aet", SCU_AE, "-aec", "SOMEONE", "127.0.0.1", str(port))
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stderr + wrong.stdout


def test_storescu_then_getscu_is_byte_identical(
    served: tuple[Archive, int, int], tmp_path: Path
) -> None:
    _archive, port, _ = served
    files = sources()
    storescu(port, files)
    getscu = dcmtk_tool("getscu")
    archive, _, _ = served
    uids = {f: str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    expected = {uid: stored_sha(archive, uid) for uid in uids.values()}
    for f, uid in uids.items():
        if corpus_file(f):
            assert expected[uid] == dataset_sha(f)  # stored exactly as the file has it
    studies: dict[str, str] = {}
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        ts = str(ds.file_meta.TransferSyntaxUID)
        # getscu accepts uncompressed syntaxes unless told to prefer a compressed one.
        studies[str(ds.StudyInstanceUID)] = "+xy" if PROPOSE.get(ts) == "-xy" else "+x="
    out = tmp_path / "got"
    out.mkdir()
    for study, prefer in studies.items():
        result = run(
            getscu, prefer, "-aet", SCU_AE, "-aec", "DUCKPACS", "-S", "+B", "-od", str(out),
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
            "127.0.0.1", str(port),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    got = {
        str(dcmread(f, stop_before_pixels=True).SOPInstanceUID): dataset_sha(f)
        for f in out.iterdir()
    }
    assert got == expected


def test_findscu_study_and_image_level(served: tuple[Archive, int, int], tmp_path: Path) -> None:
    _archive, port, _ = served
    files = sources()
    storescu(port, files)
    findscu = dcmtk_tool("findscu")
    result = run(
        findscu, "-aet", SCU_AE, "-aec", "DUCKPACS", "-S", "-X", "-od", str(tmp_path),
        "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientID",
        "127.0.0.1", str(port),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answers = [dcmread(f, force=True) for f in tmp_path.glob("rsp*.dcm")]
    studies = {str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files}
    assert {str(a.StudyInstanceUID) for a in answers} == studies
    mr = dcmread(get_testdata_file("MR_small.dcm"))
    for old in tmp_path.glob("rsp*.dcm"):
        old.unlink()
    result = run(
        findscu, "-aet", SCU_AE, "-aec", "DUCKPACS", "-S", "-X", "-od", str(tmp_path),
        "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={mr.StudyInstanceUID}",
        "-k", "SOPInstanceUID", "-k", f"SliceLocation={mr.SliceLocation}",
        "127.0.0.1", str(port),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answers = [dcmread(f, force=True) for f in tmp_path.glob("rsp*.dcm")]
    assert [str(a.SOPInstanceUID) for a in answers] == [mr.SOPInstanceUID]


def test_movescu_to_storescp(served: tuple[Archive, int, int], tmp_path: Path) -> None:
    archive, port, dest_port = served
    files = sources()
    storescu(port, files)
    storescp, movescu = dcmtk_tool("storescp"), dcmtk_tool("movescu")
    received = tmp_path / "moved"
    received.mkdir()
    scp = subprocess.Popen(
        [storescp, "-aet", DEST_AE, "+B", "-od", str(received), "--accept-all", str(dest_port)],
        env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        expected = {}
        for f in files:
            ds = dcmread(f, stop_before_pixels=True)
            uid = str(ds.SOPInstanceUID)
            expected[uid] = (str(ds.StudyInstanceUID), stored_sha(archive, uid))
        study = str(dcmread(files[-1], stop_before_pixels=True).StudyInstanceUID)
        result = run(
            movescu, "-aet", SCU_AE, "-aec", "DUCKPACS", "-aem", DEST_AE, "-S",
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
            "127.0.0.1", str(port),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        got = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID): dataset_sha(f)
               for f in received.iterdir()}  # fmt: skip
        want = {uid: sha for uid, (st, sha) in expected.items() if st == study}
        assert got == want
        bad = run(
            movescu, "-aet", SCU_AE, "-aec", "DUCKPACS", "-aem", "NOBODY", "-S",
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
            "127.0.0.1", str(port),
        )  # fmt: skip
        assert "MoveDestinationUnknown" in bad.stderr  # 0xA801, PS3.4 C.4.2.1.5
    finally:
        scp.terminate()
        scp.wait(10)
