"""Digitised film: manifest rows become SC / DX / CR instances with exact pixels."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from duckpacs import _core
from duckpacs.cli.main import main
from duckpacs.errors import ConfigError
from duckpacs.index import Index
from duckpacs.ingest.scans import COLUMNS, convert_manifest
from tests.helpers import duckpacs_cmd, require_tool, running_server
from tests.ingest_support import holding_index

RNG = np.random.default_rng(7)


def grey16() -> np.ndarray:
    return RNG.integers(0, 65536, (37, 53), dtype=np.uint16)  # odd sizes on purpose


def grey8() -> np.ndarray:
    return RNG.integers(0, 256, (31, 45), dtype=np.uint8)


def rgb8() -> np.ndarray:
    return RNG.integers(0, 256, (29, 41, 3), dtype=np.uint8)


def write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in COLUMNS})
    return path


def patient(**extra: str) -> dict[str, str]:
    base = {
        "patient_name": "Doe^Jane",
        "patient_id": "P001",
        "birth_date": "1970-03-04",
        "sex": "F",
        "study_date": "20240105",
        "description": "Chest film archive",
        "body_part": "chest",
        "accession_number": "ACC1",
        "laterality": "",
    }
    return {**base, **extra}


@pytest.fixture
def images(tmp_path: Path) -> dict[str, tuple[Path, np.ndarray]]:
    made: dict[str, tuple[Path, np.ndarray]] = {}
    a16 = grey16()
    Image.fromarray(a16).save(tmp_path / "g16.png")
    made["g16.png"] = (tmp_path / "g16.png", a16)
    Image.fromarray(a16).save(tmp_path / "g16.tif")
    made["g16.tif"] = (tmp_path / "g16.tif", a16)
    a8 = grey8()
    Image.fromarray(a8).save(tmp_path / "g8.png")
    made["g8.png"] = (tmp_path / "g8.png", a8)
    c8 = rgb8()
    Image.fromarray(c8).save(tmp_path / "c8.tif")
    made["c8.tif"] = (tmp_path / "c8.tif", c8)
    Image.fromarray(c8).save(tmp_path / "photo.jpg", quality=90)
    with Image.open(tmp_path / "photo.jpg") as im:
        made["photo.jpg"] = (tmp_path / "photo.jpg", np.asarray(im.convert("RGB")))
    return made


def test_rows_become_instances_with_exact_pixels(
    tmp_path: Path, images: dict[str, tuple[Path, np.ndarray]]
) -> None:
    rows = [
        patient(image="g16.png", laterality="L"),
        patient(
            image="g16.tif",
            modality="DX",
            laterality="R",
            pixel_spacing="0.1",
            patient_orientation="L\\F",
        ),  # fmt: skip
        patient(image="g8.png", modality="CR"),
        patient(image="c8.tif"),
        patient(image="photo.jpg", body_part="hand", study_date="2024-02-01", accession_number=""),
    ]
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    result = convert_manifest(manifest, tmp_path / "out")
    assert not result.bad_rows
    assert [r for r, _ in result.written] == [2, 3, 4, 5, 6]
    sets = {r: pydicom.dcmread(p) for r, p in result.written}
    for row_number, (name, (_, expected)) in zip(range(2, 7), images.items(), strict=True):
        ds = sets[row_number]
        assert np.array_equal(ds.pixel_array, expected), name
        assert ds.PatientName == "Doe^Jane" and ds.PatientID == "P001"
        assert ds.PatientBirthDate == "19700304" and ds.PatientSex == "F"
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    sc16 = sets[2]
    assert sc16.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert sc16.BitsAllocated == 16 and sc16.PhotometricInterpretation == "MONOCHROME2"
    assert sc16.ConversionType == "DF" and sc16.Modality == "OT"
    assert sc16.StudyDescription == "Chest film archive" and sc16.AccessionNumber == "ACC1"
    assert sc16.BodyPartExamined == "CHEST" and sc16.ImageLaterality == "L"
    assert "Laterality" not in sc16  # chest is not paired; the side is image-level
    dx = sets[3]
    assert dx.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"
    assert dx.Modality == "DX" and dx.PresentationIntentType == "FOR PRESENTATION"
    assert dx.ImageLaterality == "R" and dx.WindowWidth > 0
    assert dx.PresentationLUTShape == "IDENTITY" and dx.ImageType[1] == "PRIMARY"
    assert dx.ImagerPixelSpacing == [0.1, 0.1] and dx.PatientOrientation == ["L", "F"]
    assert dx.AnatomicRegionSequence[0].CodeValue == "51185008"  # SNOMED CT Chest
    cr = sets[4]
    assert cr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1" and cr.BitsAllocated == 8
    rgb = sets[5]
    assert rgb.PhotometricInterpretation == "RGB" and rgb.SamplesPerPixel == 3
    # Rows 2-5 are one study (same patient, date, accession); row 6 is another study.
    study = {str(sets[r].StudyInstanceUID) for r in (2, 3, 4, 5)}
    assert len(study) == 1 and str(sets[6].StudyInstanceUID) not in study
    assert len(result.studies) == 2
    # Series by modality, body part and laterality: SC/L, DX/R, CR, SC (no laterality).
    assert len({str(sets[r].SeriesInstanceUID) for r in (2, 3, 4, 5)}) == 4
    assert len({str(ds.SOPInstanceUID) for ds in sets.values()}) == 5


def test_same_manifest_gives_same_uids(
    tmp_path: Path, images: dict[str, tuple[Path, np.ndarray]]
) -> None:
    manifest = write_manifest(
        tmp_path / "m.csv", [patient(image="g8.png"), patient(image="g8.png")]
    )
    first = convert_manifest(manifest, tmp_path / "a")
    second = convert_manifest(manifest, tmp_path / "b")
    names = [p.relative_to(tmp_path / "a") for _, p in first.written]
    assert names == [p.relative_to(tmp_path / "b") for _, p in second.written]
    assert len(set(names)) == 2  # the same scan twice is still two instances


def test_bad_rows_are_reported_with_their_number(
    tmp_path: Path, images: dict[str, tuple[Path, np.ndarray]]
) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    rgba = np.dstack([rgb8(), np.full((29, 41), 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "translucent.png")
    Image.fromarray(RNG.integers(0, 65535, (8, 8, 3), dtype=np.uint16).astype(np.uint8)).save(
        tmp_path / "ok.png"
    )
    rows = [
        patient(image="missing.png"),  # 2
        patient(image="notes.txt"),  # 3
        patient(image="g8.png", sex="X"),  # 4
        patient(image="g8.png", birth_date="1970-13-45"),  # 5
        patient(image="g8.png", patient_id=""),  # 6
        patient(image="c8.tif", modality="DX"),  # 7 colour DX
        patient(image="translucent.png"),  # 8
        patient(image="g8.png", patient_name="Other^Name"),  # 9 conflicts with row 10
        patient(image="ok.png", patient_name="Doe^Jane", patient_id="P001"),  # 10
        patient(image="g8.png", modality="MR"),  # 11
    ]
    # Row 9 comes first for P001, so row 10 (Doe^Jane) is the conflicting one.
    manifest = write_manifest(tmp_path / "m.csv", rows)
    result = convert_manifest(manifest, tmp_path / "out")
    reasons = {b.row: b.reason for b in result.bad_rows}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 10, 11]
    assert "missing.png" in reasons[2]
    assert "not a readable image" in reasons[3]
    assert "sex" in reasons[4]
    assert "birth_date" in reasons[5]
    assert "patient_id is empty" in reasons[6]
    assert "greyscale only" in reasons[7]
    assert "alpha" in reasons[8]
    assert "row 9" in reasons[10]
    assert "modality" in reasons[11]
    assert [r for r, _ in result.written] == [9]


def test_sixteen_bit_colour_png_is_refused(tmp_path: Path) -> None:
    import struct
    import zlib

    # A 2x2 16-bit RGB PNG, built by hand (Pillow narrows these to 8 bits when reading).
    raw = b"".join(b"\x00" + bytes(range(12)) for _ in range(2))
    ihdr = struct.pack(">IIBBBBB", 2, 2, 16, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
    (tmp_path / "deep.png").write_bytes(png + chunk(b"IEND", b""))
    manifest = write_manifest(tmp_path / "m.csv", [patient(image="deep.png")])
    result = convert_manifest(manifest, tmp_path / "out")
    assert "16-bit colour" in result.bad_rows[0].reason


def test_manifest_header_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("file,name\nx.png,Doe\n")
    with pytest.raises(ConfigError, match="header"):
        convert_manifest(bad, tmp_path / "out")


def test_cli_import_scans(
    tmp_path: Path,
    images: dict[str, tuple[Path, np.ndarray]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = write_manifest(
        tmp_path / "m.csv", [patient(image="g8.png"), patient(image="nothing.png")]
    )
    report = tmp_path / "report.json"
    code = main(
        ["import-scans", str(manifest), "--out", str(tmp_path / "o"), "--report", str(report)]
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "1 instances in 1 studies" in out and "row 3:" in out
    data = json.loads(report.read_text())
    assert data["rejected"][0]["path"] == "row 3"
    assert data["summary"]["files"] == 1


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("import-scans", "stored in the archive"),
        ("anonymize", "Basic Application Level Confidentiality"),
        ("dicomdir", "DICOMDIR"),
    ],
)
def test_commands_have_help(
    command: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    assert expected in " ".join(capsys.readouterr().out.split())


def test_dx_needs_spacing_and_orientation(tmp_path: Path) -> None:
    a16 = grey16()
    Image.fromarray(a16).save(tmp_path / "dpi.png", dpi=(254, 254))  # 0.1 mm pixels
    Image.fromarray(a16).save(tmp_path / "nodpi.png")
    rows = [
        patient(image="nodpi.png", modality="DX", patient_orientation="L\\F"),  # 2
        patient(image="dpi.png", modality="DX"),  # 3
        patient(image="dpi.png", modality="DX", patient_orientation="A\\F"),  # 4
        patient(image="dpi.png", modality="DX", patient_orientation="up"),  # 5
        patient(image="dpi.png", body_part="hand", patient_orientation="P\\H"),  # 6 SC
    ]
    result = convert_manifest(write_manifest(tmp_path / "m.csv", rows), tmp_path / "out")
    reasons = {b.row: b.reason for b in result.bad_rows}
    assert sorted(reasons) == [2, 3, 5]
    assert "pixel_spacing" in reasons[2] and "patient_orientation" in reasons[3]
    written = dict(result.written)
    dx = pydicom.dcmread(written[4])
    assert [float(v) for v in dx.ImagerPixelSpacing] == [0.1, 0.1]
    sc = pydicom.dcmread(written[6])
    assert [float(v) for v in sc.NominalScannedPixelSpacing] == [0.1, 0.1]
    assert sc.Laterality == ""  # a paired part whose side is unknown (Type 2C)


@pytest.mark.interop
def test_dciodvfy_finds_no_errors(
    tmp_path: Path, images: dict[str, tuple[Path, np.ndarray]]
) -> None:
    dciodvfy = require_tool("dciodvfy")
    rows = [
        patient(image="g16.png", body_part="hand", laterality="L"),
        patient(image="c8.tif"),
        patient(image="g8.png", modality="CR", body_part="knee"),
        patient(
            image="g16.tif", modality="DX", pixel_spacing="0.15", patient_orientation="R\\F"
        ),
        patient(image="g16.tif", modality="DX", body_part="neck", pixel_spacing="0.15",
                patient_orientation="R\\F"),
    ]  # fmt: skip
    result = convert_manifest(write_manifest(tmp_path / "m.csv", rows), tmp_path / "out")
    assert not result.bad_rows
    for _, path in result.written:
        proc = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "Error" in line]
        assert not errors, (path, errors)


# --- into the archive ------------------------------------------------------------------------


def archived_bytes(data: Path) -> dict[str, bytes]:
    """{SOP Instance UID: bytes read back from the store} for every indexed instance."""
    with Index.open(data, read_only=True) as index:
        rows = index.connection().execute(
            'SELECT sop_instance_uid, pack, "offset", length, sha256 FROM instances'
        )
        located = rows.fetchall()
    out: dict[str, bytes] = {}
    with _core.Store(data / "store") as store:
        for uid, pack, offset, length, digest in located:
            blob = store.get((pack, offset, length))
            assert hashlib.sha256(blob).hexdigest() == digest
            out[str(uid)] = blob
    return out


def test_import_scans_stores_in_the_archive_once(
    tmp_path: Path,
    images: dict[str, tuple[Path, np.ndarray]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = [
        patient(image="g16.png", laterality="L"),  # 2
        patient(image="c8.tif"),  # 3
        patient(image="g8.png", modality="CR"),  # 4
        patient(image="missing.png"),  # 5: bad
        patient(image="photo.jpg", body_part="hand", study_date="2024-02-01", accession_number=""),
    ]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    data = tmp_path / "archive"
    assert main(["import-scans", str(manifest), "--data", str(data), "--json"]) == 1
    first = json.loads(capsys.readouterr().out)
    assert first["stored"] == 4 and first["already_archived"] == 0
    assert [b["row"] for b in first["bad_rows"]] == [5]
    assert first["summary"]["files"] == 4 and first["studies"] == 2
    by_row = {a["row"]: a["sop_instance_uid"] for a in first["archived"]}
    assert sorted(by_row) == [2, 3, 4, 6]

    # `duckpacs find` sees them: two studies, four instances of patient P001.
    assert main(["find", "--data", str(data), "--level", "image", "PatientID=P001", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert {str(r["SOPInstanceUID"]) for r in found} == set(by_row.values())
    assert main(["find", "--data", str(data), "PatientID=P001", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2

    # Pixels read back from the store are the source image's pixels.
    stored = archived_bytes(data)
    sources = {2: "g16.png", 3: "c8.tif", 4: "g8.png", 6: "photo.jpg"}
    for row, name in sources.items():
        ds = pydicom.dcmread(io.BytesIO(stored[by_row[row]]))
        assert np.array_equal(ds.pixel_array, images[name][1]), name
    # The archive holds exactly what --out writes: conversion is deterministic.
    files = convert_manifest(manifest, tmp_path / "files")
    assert {pydicom.dcmread(p).SOPInstanceUID: p.read_bytes() for _, p in files.written} == stored

    # A rerun stores nothing new.
    with _core.Store(data / "store") as store:
        before = int(store.stats()["instances"])
    assert main(["import-scans", str(manifest), "--data", str(data), "--json"]) == 1
    again = json.loads(capsys.readouterr().out)
    assert again["stored"] == 0 and again["already_archived"] == 4
    with _core.Store(data / "store") as store:
        assert int(store.stats()["instances"]) == before == 4
    assert archived_bytes(data) == stored


def test_import_scans_text_output_and_edited_row_conflict(
    tmp_path: Path,
    images: dict[str, tuple[Path, np.ndarray]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "archive"
    manifest = write_manifest(tmp_path / "m.csv", [patient(image="g8.png")])
    assert main(["import-scans", str(manifest), "--data", str(data)]) == 0
    assert "stored 1, already archived 0" in capsys.readouterr().out
    # Same keys and pixels (so the same UID) but another birth date: the archived copy stays
    # and the row is reported.
    edited = write_manifest(tmp_path / "m.csv", [patient(image="g8.png", birth_date="19710304")])
    assert main(["import-scans", str(edited), "--data", str(data)]) == 1
    out = capsys.readouterr().out
    assert "row 2: conflict" in out and "stored 0" in out
    ((_, blob),) = archived_bytes(data).items()
    assert pydicom.dcmread(io.BytesIO(blob)).PatientBirthDate == "19700304"


def test_import_scans_refuses_or_waits_for_the_index_owner(
    tmp_path: Path, images: dict[str, tuple[Path, np.ndarray]]
) -> None:
    data = tmp_path / "archive"
    manifest = write_manifest(tmp_path / "m.csv", [patient(image="g8.png")])
    with holding_index(data, seconds=3):
        refused = subprocess.run(
            duckpacs_cmd("--data", str(data), "import-scans", str(manifest)),
            capture_output=True,
            text=True,
        )
        assert refused.returncode != 0
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("duckpacs: error:")
        assert "--wait" in lines[0]
        waited = subprocess.run(
            duckpacs_cmd("--data", str(data), "import-scans", str(manifest), "--wait", "30",
                         "--json"),
            capture_output=True,
            text=True,
            check=True,
        )  # fmt: skip
    assert json.loads(waited.stdout)["stored"] == 1


def test_rerun_after_supplying_a_missing_image_stores_only_that_row(
    tmp_path: Path,
    images: dict[str, tuple[Path, np.ndarray]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = [patient(image="g8.png"), patient(image="later.png"), patient(image="g16.png")]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    data = tmp_path / "archive"
    assert main(["import-scans", str(manifest), "--data", str(data), "--json"]) == 1
    first = json.loads(capsys.readouterr().out)
    assert first["stored"] == 2 and [b["row"] for b in first["bad_rows"]] == [3]
    Image.fromarray(grey8()).save(tmp_path / "later.png")
    assert main(["import-scans", str(manifest), "--data", str(data), "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["stored"] == 1 and second["already_archived"] == 2 and not second["bad_rows"]
    numbers = {
        int(pydicom.dcmread(io.BytesIO(b)).InstanceNumber) for b in archived_bytes(data).values()
    }
    assert numbers == {1, 2, 3}  # one series, numbered by manifest order


def test_import_scans_refuses_while_serve_runs(
    tmp_path: Path, images: dict[str, tuple[Path, np.ndarray]]
) -> None:
    data = tmp_path / "archive"
    manifest = write_manifest(tmp_path / "m.csv", [patient(image="g8.png")])
    with running_server(data):
        refused = subprocess.run(
            duckpacs_cmd("--data", str(data), "import-scans", str(manifest)),
            capture_output=True,
            text=True,
        )
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "serve" in lines[0] and "--wait" in lines[0]
    assert main(["import-scans", str(manifest), "--data", str(data)]) == 0  # once it stopped
