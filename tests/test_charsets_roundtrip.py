"""Names in every character set of the standard's examples, through `duckpacs serve` and back
(docs/CHARACTER-SETS.md): each file of tests/charset_names.py is stored by storescu, then
found by C-FIND from pynetdicom and from DCMTK's findscu

- with no Specific Character Set (matching on Patient ID, the name a return key: a query
  without a declared set cannot carry these names),
- with the file's own set and with ISO_IR 192 (matching on the exact name, written in that
  set, ISO 2022 escapes included),

and by QIDO-RS. Every answer holds exactly that study, and the name decoded from it with the
set the answer declares is the stored name. An answer never holds a byte beyond ASCII without
declaring its set.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from tests.charset_names import (
    NAMES,
    charset_text,
    decode_name,
    element,
    encoded_name,
    groups,
    name_file,
    patient_id,
)
from tests.dimse_support import SCU_AE, dcmtk_tool
from tests.helpers import RunningServer, dcmtk_env, running_server

MODES = ["none", "file", "utf8"]
ENTRIES = range(len(NAMES))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("names")
    files = []
    for i in ENTRIES:
        path = root / "in" / f"name{i:02d}.dcm"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(name_file(i))
        files.append(str(path))
    data = root / "archive"
    data.mkdir()
    (data / "duckpacs.toml").write_text(
        f'[peers.scu]\nae_title = "{SCU_AE}"\nhost = "127.0.0.1"\nport = 1\n'
    )
    with running_server(data) as srv:
        sent = subprocess.run(
            [dcmtk_tool("storescu"), "-aet", SCU_AE, "-aec", "DUCKPACS", "127.0.0.1",
             str(srv.dimse_port), *files],
            env=dcmtk_env(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        yield srv


def identifier(i: int, mode: str) -> bytes:
    """A STUDY level identifier for entry ``i``: with no set (Patient ID matched, the name
    asked for), in the file's set or in UTF-8 (the exact name matched)."""
    charset, name = NAMES[i]
    els: list[bytes] = []
    if mode == "file":
        els.append(element(0x00080005, "CS", charset_text(charset).encode()))
        name_bytes = encoded_name(i)
    elif mode == "utf8":
        els.append(element(0x00080005, "CS", b"ISO_IR 192"))
        name_bytes = name.encode()
    else:
        els.append(element(0x00080005, "CS", b""))  # a return key: which set the answer is in
        name_bytes = b""
    els += [
        element(0x00080052, "CS", b"STUDY"),
        element(0x00100010, "PN", name_bytes),
        element(0x00100020, "LO", patient_id(i).encode() if mode == "none" else b""),
        element(0x0020000D, "UI", b""),
    ]
    return b"".join(els)


def check_answer(answer: Dataset, i: int, mode: str) -> None:
    charset, name = NAMES[i]
    declared_text = "\\".join(text_values(answer, 0x00080005))
    raw = answer.get_item(0x00100010).value
    assert isinstance(raw, bytes), "the name as it came over the network"
    # PS3.4 C.4.1.1.3.2: the set of the answer's values is declared.
    expected_set = {"none": "ISO_IR 192", "utf8": "ISO_IR 192", "file": charset_text(charset)}
    assert declared_text == expected_set[mode], (i, mode)
    assert groups(decode_name(raw, declared_text.split("\\"))) == groups(name), (i, mode)
    assert text_values(answer, 0x00100020) == [patient_id(i)]


def text_values(ds: Dataset, tag: int) -> list[str]:
    """An ASCII element's values, whether pydicom has converted it yet or not."""
    elem = ds.get_item(tag)
    value = elem.value if elem is not None else None
    if not value:
        return []
    if isinstance(value, bytes):
        return [v.strip() for v in value.decode().split("\\")]
    return [str(v).strip() for v in (value if isinstance(value, list | MultiValue) else [value])]


def pynetdicom_find(port: int, query: bytes) -> list[Dataset]:
    """The pending answers' identifiers as they came (pynetdicom hands them over decoded, so
    their bytes are taken as each C-FIND-RSP arrives)."""
    received: list[bytes] = []

    def keep(event: evt.Event) -> None:
        message = event.message
        if isinstance(message, C_FIND_RSP) and message.command_set.Status == 0xFF00:
            received.append(message.data_set.getvalue())

    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="DUCKPACS", evt_handlers=[(evt.EVT_DIMSE_RECV, keep)]
    )
    assert assoc.is_established
    try:
        ds = dcmread(BytesIO(query), force=True)  # sent as these bytes: raw elements
        pending = 0
        for status, _ in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):
            assert status is not None and status.Status in (0x0000, 0xFF00), status
            pending += status.Status == 0xFF00
    finally:
        assoc.release()
    answers = [dcmread(BytesIO(raw), force=True) for raw in received]
    assert len(answers) == pending
    return answers


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("i", ENTRIES)
def test_pynetdicom_finds_each_name(server: RunningServer, i: int, mode: str) -> None:
    answers = pynetdicom_find(server.dimse_port, identifier(i, mode))
    assert len(answers) == 1, (NAMES[i], mode)
    check_answer(answers[0], i, mode)


@pytest.mark.interop
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("i", ENTRIES)
def test_findscu_finds_each_name(server: RunningServer, tmp_path: Path, i: int, mode: str) -> None:
    query = tmp_path / "query.dcm"
    query.write_bytes(identifier(i, mode))
    out = tmp_path / "answers"
    out.mkdir()
    result = subprocess.run(
        [dcmtk_tool("findscu"), "-aet", SCU_AE, "-aec", "DUCKPACS", "-S", "-X", "-od", str(out),
         "127.0.0.1", str(server.dimse_port), str(query)],
        env=dcmtk_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answers = [dcmread(f, force=True) for f in sorted(out.glob("rsp*.dcm"))]
    assert len(answers) == 1, (NAMES[i], mode, result.stderr)
    check_answer(answers[0], i, mode)


def test_an_undeclared_latin1_query_matches_as_dcmtk_and_pydicom_read_it(
    server: RunningServer,
) -> None:
    """Peers send Latin-1 bytes without declaring ISO_IR 100; the query is read as Latin-1
    (as DCMTK and pydicom read such values) and the answer declares what it holds."""
    i = next(n for n, (cs, _) in enumerate(NAMES) if cs == "ISO_IR 100")
    query = b"".join(
        [
            element(0x00080052, "CS", b"STUDY"),
            element(0x00100010, "PN", encoded_name(i)),
            element(0x00100020, "LO", b""),
            element(0x0020000D, "UI", b""),
        ]
    )
    answers = pynetdicom_find(server.dimse_port, query)
    assert len(answers) == 1
    check_answer(answers[0], i, "none")


def qido(server: RunningServer, params: dict[str, str]) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{server.http_port}/dicom-web/studies?"
    request = urllib.request.Request(
        url + urllib.parse.urlencode(params), headers={"Accept": "application/dicom+json"}
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        body: list[dict[str, Any]] = json.loads(r.read())
    return body


@pytest.mark.parametrize("i", ENTRIES)
def test_qido_finds_each_name_with_its_groups_split(server: RunningServer, i: int) -> None:
    """PS3.18 F.2.2: the name's groups are Alphabetic, Ideographic and Phonetic."""
    name = NAMES[i][1]
    found = qido(server, {"PatientName": name})
    assert len(found) == 1
    (value,) = found[0]["00100010"]["Value"]
    alphabetic, ideographic, phonetic = groups(name)
    expected = {"Alphabetic": alphabetic, "Ideographic": ideographic, "Phonetic": phonetic}
    assert value == {k: v for k, v in expected.items() if v}
    assert found[0]["00100020"]["Value"] == [patient_id(i)]
