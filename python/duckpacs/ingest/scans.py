"""Digitised film and paper: a CSV manifest of images becomes DICOM instances.

Each manifest row names an image (JPEG, PNG or TIFF; 8 or 16 bit grey, or 8 bit colour) and
the patient and study it belongs to. It becomes:

* ``SC`` (default): a Secondary Capture Image (PS3.3 A.8.1), Conversion Type ``DF``
  (digitised film, PS3.3 C.8.6.1), Modality ``OT``;
* ``DX``: a Digital X-Ray Image, For Presentation (PS3.3 A.26, C.8.11), grey only;
* ``CR``: a Computed Radiography Image (PS3.3 A.2, C.8.1), grey only.

Rows with the same patient and study keys (Patient ID, study date, accession number or else
study description) share one Study Instance UID; within a study, one series per modality and
body part. UIDs are derived from the manifest's keys and the image's content (PS3.5 B.2,
``2.25`` UUID form), so converting the same manifest again yields the same instances.

:func:`store_manifest` stores the instances in the archive through the importer of
``duckpacs import`` (dedupe by UID and SHA-256, store, then index), so rerunning a manifest
stores nothing twice; :func:`convert_manifest` writes Part 10 files to a folder instead.

Pixels are stored uncompressed, exactly as decoded: PNG and TIFF values are kept bit for bit,
JPEG is decoded to its pixels (the JPEG's own loss happened before us). Anything that cannot
be kept exactly (16-bit colour, floating point, translucent alpha) is refused with the row
number and the reason.
"""

from __future__ import annotations

import csv
import hashlib
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from duckpacs.errors import ConfigError, StorageError
from duckpacs.files import part10
from duckpacs.files.sources import SourceItem
from duckpacs.ingest import batch as batch_mod
from duckpacs.ingest import importer as importer_mod
from duckpacs.ingest.batch import Payload

SOP_CLASSES = {
    "SC": UID("1.2.840.10008.5.1.4.1.1.7"),  # Secondary Capture Image Storage
    "DX": UID("1.2.840.10008.5.1.4.1.1.1.1"),  # Digital X-Ray Image Storage - For Presentation
    "CR": UID("1.2.840.10008.5.1.4.1.1.1"),  # Computed Radiography Image Storage
}
COLUMNS = (
    "image",
    "patient_name",
    "patient_id",
    "birth_date",
    "sex",
    "study_date",
    "description",
    "body_part",
    "accession_number",
    "laterality",
    "modality",
    "pixel_spacing",
    "patient_orientation",
)
REQUIRED = ("image", "patient_id", "patient_name")
SEXES = {"M", "F", "O", ""}  # PS3.3 C.7.1.1 Patient's Sex
LATERALITIES = {"R", "L", "U", "B", ""}  # PS3.3 C.7.6.2 Image Laterality (U unpaired, B both)
CS_CHARS = re.compile(r"^[A-Z0-9_ ]*$")
# Body parts that come in pairs: General Series Laterality (0020,0060) is Type 2C, required
# for these and forbidden for the others (PS3.3 C.7.3.1).
PAIRED_PARTS = frozenset(
    {
        "ANKLE", "ARM", "BREAST", "CLAVICLE", "EAR", "ELBOW", "EYE", "FEMUR", "FINGER",
        "FOOT", "FOREARM", "HAND", "HEEL", "HIP", "HUMERUS", "KIDNEY", "KNEE", "LEG",
        "LOWER LIMB", "LUNG", "ORBIT", "PATELLA", "RADIUS", "RIB", "SCAPULA", "SHOULDER",
        "THIGH", "TIBIA", "TOE", "ULNA", "UPPER LIMB", "WRIST",
    }
)  # fmt: skip
# Anatomic Region codes (SNOMED CT, CID 4031) for the usual film body parts; the DX Anatomy
# Imaged module wants the region coded whenever it is known (PS3.3 C.8.11.5).
ANATOMIC_REGIONS = {
    "ABDOMEN": ("818983003", "Abdomen"),
    "ANKLE": ("344001", "Ankle"),
    "BREAST": ("76752008", "Breast"),
    "CHEST": ("51185008", "Chest"),
    "FOOT": ("56459004", "Foot"),
    "HAND": ("85562004", "Hand"),
    "HIP": ("29836001", "Hip"),
    "KNEE": ("72696002", "Knee"),
    "PELVIS": ("12921003", "Pelvis"),
    "SHOULDER": ("16982005", "Shoulder"),
    "SKULL": ("89546000", "Skull"),
    "WRIST": ("74670003", "Wrist"),
}
IMAGE_FORMATS = {"JPEG", "PNG", "TIFF", "MPO"}
UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "duckpacs:import-scans")


@dataclass(frozen=True)
class ScanRow:
    """One validated manifest row."""

    row: int
    image: Path
    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    study_date: str
    description: str
    body_part: str
    accession_number: str
    laterality: str
    modality: str
    pixel_spacing: tuple[float, float] | None = None
    orientation: tuple[str, str] | None = None

    def study_key(self) -> tuple[str, ...]:
        return (self.patient_id, self.study_date, self.accession_number or self.description)


@dataclass(frozen=True)
class BadRow:
    """A manifest row that produced no instance: its number (header is row 1) and why."""

    row: int
    reason: str

    def as_json(self) -> dict[str, object]:
        return {"row": self.row, "reason": self.reason}


@dataclass
class ScanResult:
    """What :func:`convert_manifest` wrote or :func:`store_manifest` archived."""

    written: list[tuple[int, Path]] = field(default_factory=list)  # (row, output file)
    bad_rows: list[BadRow] = field(default_factory=list)
    studies: dict[tuple[str, ...], str] = field(default_factory=dict)
    bytes_read: int = 0
    digests: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)
    archive: Path | None = None  # the data folder, when stored in the archive
    archived: list[tuple[int, str]] = field(default_factory=list)  # (row, SOP Instance UID)
    stored: int = 0  # new in the archive
    already: int = 0  # archived with the same bytes before (a rerun)

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "bad_rows": [b.as_json() for b in self.bad_rows],
            "studies": len(self.studies),
        }
        if self.archive is None:
            out["written"] = [{"row": r, "file": str(p)} for r, p in self.written]
        else:
            out["archive"] = str(self.archive)
            out["stored"] = self.stored
            out["already_archived"] = self.already
            out["archived"] = [{"row": r, "sop_instance_uid": u} for r, u in self.archived]
        return out


# --- manifest --------------------------------------------------------------------------------


def _date(value: str, what: str) -> str:
    """A DA value (PS3.5 6.2) from ``YYYYMMDD`` or ``YYYY-MM-DD``; empty stays empty."""
    value = value.strip()
    if not value:
        return ""
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            parsed = datetime.strptime(value, fmt).date()
        except ValueError:
            continue
        if not date(1850, 1, 1) <= parsed <= date.today():
            raise ValueError(f"{what} {value!r} is not a plausible date")
        return parsed.strftime("%Y%m%d")
    raise ValueError(f"{what} {value!r} is not YYYYMMDD or YYYY-MM-DD")


def _text(value: str, what: str, limit: int, *, cs: bool = False) -> str:
    value = value.strip()
    if cs:
        value = value.upper().replace("-", " ")
        if not CS_CHARS.match(value):
            raise ValueError(f"{what} {value!r} may only hold A-Z, 0-9, space and _")
    if "\\" in value or any(ord(c) < 32 for c in value):
        raise ValueError(f"{what} contains a backslash or control character")
    if len(value) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    return value


def _person_name(value: str) -> str:
    """A PN value (PS3.5 6.2.1): ``Family^Given``; "Family, Given" is converted."""
    value = value.strip()
    if "^" not in value and "," in value:
        family, given = value.split(",", 1)
        value = f"{family.strip()}^{given.strip()}"
    if "\\" in value or len(value) > 64 or not value:
        raise ValueError("patient_name must be 1-64 characters without backslash")
    return value


def _spacing(value: str) -> tuple[float, float] | None:
    """Pixel spacing in mm: one number, or "row\\column" / "row,column" (PS3.3 10.7.1.3)."""
    if not value:
        return None
    parts = re.split(r"[\\,;x ]+", value.strip())
    try:
        numbers = [float(p) for p in parts if p]
    except ValueError as e:
        raise ValueError(f"pixel_spacing {value!r} is not a number of millimetres") from e
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or not all(0 < n < 100 for n in numbers):
        raise ValueError(f"pixel_spacing {value!r} must be 1 or 2 values in mm, 0-100")
    return numbers[0], numbers[1]


def _orientation(value: str) -> tuple[str, str] | None:
    """Patient Orientation: row then column direction, letters A P R L H F (C.7.6.1.1.1)."""
    if not value:
        return None
    parts = [p for p in re.split(r"[\\,;/ ]+", value.strip().upper()) if p]
    if len(parts) != 2 or not all(re.fullmatch(r"[APRLHF]{1,3}", p) for p in parts):
        raise ValueError(f"patient_orientation {value!r} is not like L\\F (letters APRLHF)")
    return parts[0], parts[1]


def validate_row(number: int, raw: dict[str, str], base: Path) -> ScanRow:
    """Check one manifest row; raise ValueError with a message naming the bad field."""
    get = {k: (raw.get(k) or "").strip() for k in COLUMNS}
    for key in REQUIRED:
        if not get[key]:
            raise ValueError(f"{key} is empty")
    image = Path(get["image"])
    image = image if image.is_absolute() else base / image
    sex = get["sex"].upper()
    if sex not in SEXES:
        raise ValueError(f"sex {get['sex']!r} is not M, F or O")
    laterality = get["laterality"].upper()
    if laterality not in LATERALITIES:
        raise ValueError(f"laterality {get['laterality']!r} is not R, L, B or U")
    modality = (get["modality"] or "SC").upper()
    if modality not in SOP_CLASSES:
        raise ValueError(f"modality {get['modality']!r} is not SC, DX or CR")
    return ScanRow(
        pixel_spacing=_spacing(get["pixel_spacing"]),
        orientation=_orientation(get["patient_orientation"]),
        row=number,
        image=image,
        patient_name=_person_name(get["patient_name"]),
        patient_id=_text(get["patient_id"], "patient_id", 64),
        birth_date=_date(get["birth_date"], "birth_date"),
        sex=sex,
        study_date=_date(get["study_date"], "study_date"),
        description=_text(get["description"], "description", 64),
        body_part=_text(get["body_part"], "body_part", 16, cs=True),
        accession_number=_text(get["accession_number"], "accession_number", 16),
        laterality=laterality,
        modality=modality,
    )


def read_manifest(path: str | Path) -> Iterator[ScanRow | BadRow]:
    """Read and validate the manifest; yield good rows and bad rows (with their numbers)."""
    manifest = Path(path)
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{manifest}: cannot read manifest: {e}") from e
    reader = csv.DictReader(text.splitlines())
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ConfigError(
            f"{manifest}: header must name the columns {', '.join(COLUMNS)} "
            f"(missing: {', '.join(missing)})"
        )
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise ConfigError(f"{manifest}: unknown columns {', '.join(unknown)}")
    reader.fieldnames = header
    for raw in reader:
        number = reader.line_num
        if not any((v or "").strip() for v in raw.values() if isinstance(v, str)):
            continue
        if None in raw:
            yield BadRow(number, "more fields than the header has columns")
            continue
        try:
            yield validate_row(number, raw, manifest.parent)
        except ValueError as e:
            yield BadRow(number, str(e))


# --- pixels ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pixels:
    """Decoded pixels ready for the Image Pixel module (PS3.3 C.7.6.3)."""

    array: np.ndarray  # (rows, columns) or (rows, columns, 3)
    bits: int  # 8 or 16
    colour: bool
    source_format: str
    spacing: tuple[float, float] | None = None  # from the scanner's DPI, (row, column) mm


def _declared_bits(im: Image.Image, path: Path) -> int:
    """Bits per sample the file declares: Pillow silently narrows 16-bit colour to 8."""
    if im.format == "PNG":
        with path.open("rb") as f:
            head = f.read(26)
        # IHDR is the first chunk; byte 24 is the bit depth (PNG specification 11.2.2).
        if len(head) == 26 and head[12:16] == b"IHDR":
            return head[24]
    if im.format == "TIFF":
        bps = getattr(im, "tag_v2", {}).get(258)  # BitsPerSample
        if isinstance(bps, tuple) and bps:
            return int(max(bps))
        if isinstance(bps, int):
            return bps
    return 16 if im.mode.startswith("I") else 8


def load_pixels(path: Path) -> Pixels:
    """Decode an image file losslessly into an array; raise ValueError if that is impossible."""
    try:
        with Image.open(path) as im:
            im.load()
            fmt = im.format or "?"
            if fmt not in IMAGE_FORMATS:
                raise ValueError(f"{path.name}: {fmt} images are not accepted (JPEG, PNG, TIFF)")
            pixels = _to_pixels(im, fmt, _declared_bits(im, path), path.name)
            return Pixels(pixels.array, pixels.bits, pixels.colour, fmt, _dpi_spacing(im))
    except UnidentifiedImageError as e:
        raise ValueError(f"{path.name}: not a readable image") from e
    except OSError as e:
        raise ValueError(f"{path.name}: {e.strerror or e}") from e


def _dpi_spacing(im: Image.Image) -> tuple[float, float] | None:
    """Pixel spacing (row, column) in mm from the resolution the scanner wrote, if any."""
    dpi = im.info.get("dpi")
    if not isinstance(dpi, tuple | list) or len(dpi) < 2:
        return None
    try:
        x, y = float(dpi[0]), float(dpi[1])
    except (TypeError, ValueError):
        return None
    if x < 10 or y < 10:  # 1 or 72 "dpi" defaults say nothing about the scanner
        return None
    return round(25.4 / y, 6), round(25.4 / x, 6)


def _to_pixels(im: Image.Image, fmt: str, declared: int, name: str) -> Pixels:
    mode = im.mode
    if getattr(im, "n_frames", 1) > 1 and fmt != "MPO":
        raise ValueError(f"{name}: multi-page images are not accepted; one page per row")
    if mode in ("RGB", "RGBA", "P", "PA", "YCbCr"):
        if declared > 8:
            raise ValueError(f"{name}: {declared}-bit colour cannot be kept exactly")
        if mode in ("RGBA", "PA") or (mode == "P" and "transparency" in im.info):
            rgba = np.asarray(im.convert("RGBA"))
            if (rgba[..., 3] != 255).any():
                raise ValueError(f"{name}: translucent pixels (alpha) cannot be kept exactly")
        return Pixels(np.ascontiguousarray(np.asarray(im.convert("RGB"))), 8, True, fmt)
    if mode in ("L", "1", "LA"):
        if mode == "LA" and (np.asarray(im)[..., 1] != 255).any():
            raise ValueError(f"{name}: translucent pixels (alpha) cannot be kept exactly")
        grey = np.asarray(im.convert("L"), dtype=np.uint8)
        return Pixels(np.ascontiguousarray(grey), 8, False, fmt)
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 0xFFFF):
            raise ValueError(f"{name}: values outside 0-65535 cannot be stored in 16 bits")
        return Pixels(np.ascontiguousarray(values.astype("<u2")), 16, False, fmt)
    if mode == "CMYK":
        raise ValueError(f"{name}: CMYK images cannot be converted without loss; save as RGB")
    raise ValueError(f"{name}: image mode {mode} is not supported (grey 8/16 bit or RGB)")


# --- datasets --------------------------------------------------------------------------------


def _uid(*parts: object) -> UID:
    """A name-based UID: ``2.25.`` + a UUID version 5 of the parts (PS3.5 B.2, RFC 4122)."""
    name = "\x1f".join(str(p) for p in parts)
    return UID(f"2.25.{uuid.uuid5(UID_NAMESPACE, name).int}")


def build_dataset(row: ScanRow, pixels: Pixels, uids: dict[str, str], number: int) -> Dataset:
    """The DICOM instance for one row (modules per PS3.3 A.8.1, A.26 or A.2)."""
    if pixels.colour and row.modality != "SC":
        raise ValueError(f"{row.modality} images are greyscale only (PS3.3 C.8.11.3, C.8.1.2)")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8 names
    ds.SOPClassUID = SOP_CLASSES[row.modality]
    ds.SOPInstanceUID = uids["instance"]
    # No Instance Creation Date/Time (Type 3, PS3.3 C.12.1): the clock would make a rerun's
    # bytes differ under the same UID, and the archive would see a conflict, not a duplicate.
    # Patient (C.7.1.1)
    ds.PatientName = row.patient_name
    ds.PatientID = row.patient_id
    ds.PatientBirthDate = row.birth_date
    ds.PatientSex = row.sex
    # General Study (C.7.2.1)
    ds.StudyInstanceUID = uids["study"]
    ds.StudyDate = row.study_date
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = row.accession_number  # SH, Type 2: the accession number is the best we have
    ds.AccessionNumber = row.accession_number
    if row.description:
        ds.StudyDescription = row.description
    # General Series (C.7.3.1)
    ds.Modality = "OT" if row.modality == "SC" else row.modality
    ds.SeriesInstanceUID = uids["series"]
    ds.SeriesNumber = uids["series_number"]
    ds.SeriesDescription = "Digitised film" + (f" {row.body_part}" if row.body_part else "")
    ds.BodyPartExamined = row.body_part
    if row.body_part in PAIRED_PARTS and not row.laterality:
        ds.Laterality = ""  # paired part, side unknown (Type 2C, PS3.3 C.7.3.1)
    # General Equipment (C.7.5.1) and SC Equipment (C.8.6.1)
    ds.Manufacturer = "duckpacs"
    if row.modality == "SC":
        ds.ConversionType = "DF"  # SC Equipment (C.8.6.1): digitised film
    # General Image (C.7.6.1)
    ds.InstanceNumber = number
    ds.PatientOrientation = ""
    ds.ContentDate = row.study_date
    ds.ContentTime = ""
    ds.BurnedInAnnotation = "YES"  # film labels carry names and dates
    _image_pixel(ds, pixels)
    if row.laterality:
        # Image Laterality makes the series' Laterality superfluous (C.7.3.1, C.7.6.1).
        ds.ImageLaterality = row.laterality
    spacing = row.pixel_spacing or pixels.spacing
    if row.modality == "DX":
        _dx(ds, pixels, row, spacing)
    elif row.modality == "CR":
        ds.ViewPosition = ""  # CR Series, Type 2
    elif spacing is not None:  # SC Image (C.8.6.2)
        ds.NominalScannedPixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    ds.LossyImageCompression = "00"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _image_pixel(ds: Dataset, pixels: Pixels) -> None:
    """Image Pixel module (C.7.6.3) for native, uncompressed pixels."""
    arr = pixels.array
    ds.Rows, ds.Columns = int(arr.shape[0]), int(arr.shape[1])
    ds.SamplesPerPixel = 3 if pixels.colour else 1
    ds.PhotometricInterpretation = "RGB" if pixels.colour else "MONOCHROME2"
    if pixels.colour:
        ds.PlanarConfiguration = 0  # R1G1B1 R2G2B2 ... as decoded
    ds.BitsAllocated = pixels.bits
    ds.BitsStored = pixels.bits
    ds.HighBit = pixels.bits - 1
    ds.PixelRepresentation = 0
    data = arr.astype("<u2").tobytes() if pixels.bits == 16 else arr.astype(np.uint8).tobytes()
    ds.PixelData = data + (b"\x00" if len(data) % 2 else b"")
    ds["PixelData"].VR = "OW" if pixels.bits == 16 else "OB"


def _dx(ds: Dataset, pixels: Pixels, row: ScanRow, spacing: tuple[float, float] | None) -> None:
    """DX Series/Image/Detector/Positioning attributes, For Presentation (PS3.3 A.26, C.8.11)."""
    if spacing is None:
        raise ValueError(
            "DX needs the pixel spacing: add a pixel_spacing column (mm) or save the scan "
            "with its resolution (DPI)"
        )
    arr = pixels.array
    low, high = (int(arr.min()), int(arr.max())) if arr.size else (0, 1)
    if not row.orientation:
        raise ValueError(
            "DX needs patient_orientation: the directions of the rows and columns, e.g. "
            "L\\F (PS3.3 C.7.6.1.1.1)"
        )
    ds.PatientOrientation = list(row.orientation)
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageLaterality = ds.get("ImageLaterality") or "U"  # DX Anatomy Imaged (C.8.11.5)
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.WindowCenter = str((low + high) // 2)
    ds.WindowWidth = str(max(1, high - low + 1))
    ds.PresentationLUTShape = "IDENTITY"  # MONOCHROME2, For Presentation (C.8.11.3.1.4)
    ds.DetectorType = ""
    ds.ImagerPixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]  # DX Detector, Type 1
    ds.ViewPosition = ""
    ds.PositionerType = ""
    ds.AcquisitionContextSequence = Sequence()
    ds.AnatomicRegionSequence = Sequence()
    region = ANATOMIC_REGIONS.get(row.body_part)
    if region is not None:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = region[0], "SCT", region[1]
        ds.AnatomicRegionSequence = Sequence([code])
    elif "BodyPartExamined" in ds:
        # An uncoded region cannot go in the sequence, and a known Body Part Examined next
        # to an empty sequence contradicts it: keep the body part in the series description.
        del ds.BodyPartExamined
        if "Laterality" in ds:
            del ds.Laterality


@dataclass(frozen=True)
class Converted:
    """One converted row: its validated fields, its UIDs and the Part 10 bytes."""

    row: ScanRow
    uids: dict[str, str]
    data: bytes
    source_size: int  # bytes of the image file, for progress


RowCallback = Callable[[ScanRow | BadRow, int], None]


def convert_rows(manifest: str | Path, result: ScanResult) -> Iterator[Converted | BadRow]:
    """Validate and convert every manifest row, in order; yield instances and bad rows.

    ``result`` receives the bad rows, the studies and the bytes read; the caller decides
    where the instances go (files or the archive). The same manifest and images always give
    the same bytes (UIDs by PS3.5 B.2 from the rows' keys and pixels, no clock values).
    Series and instance numbers are given to every valid row before its image is read, so a
    row whose image was missing and is supplied on a rerun does not renumber the rows after
    it (their archived copies would otherwise differ from the new ones).
    """
    patients: dict[str, tuple[str, str, str, int]] = {}
    series: dict[tuple[object, ...], tuple[str, int]] = {}
    counters: dict[str, int] = {}
    for entry in read_manifest(manifest):
        if isinstance(entry, BadRow):
            result.bad_rows.append(entry)
            yield entry
            continue
        uids = _series_for(entry, series)
        counters[uids["series"]] = number = counters.get(uids["series"], 0) + 1
        try:
            _check_patient(entry, patients)
            pixels = load_pixels(entry.image)
            size = entry.image.stat().st_size
            digest = hashlib.sha256(pixels.array.tobytes()).hexdigest()
            uids["instance"] = _instance_uid(uids["series"], digest, result)
            data = part10.encode(build_dataset(entry, pixels, uids, number))
        except (ValueError, OSError) as e:
            bad = BadRow(entry.row, str(e))
            result.bad_rows.append(bad)
            yield bad
            continue
        patients.setdefault(
            entry.patient_id, (entry.patient_name, entry.birth_date, entry.sex, entry.row)
        )
        result.studies[entry.study_key()] = uids["study"]
        result.bytes_read += size
        yield Converted(entry, uids, data, size)


def convert_manifest(
    manifest: str | Path,
    out_dir: str | Path,
    *,
    on_row: RowCallback | None = None,
) -> ScanResult:
    """Convert every good manifest row to a Part 10 file under ``out_dir``.

    Files are written as ``out_dir/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
    Bad rows (invalid fields, missing or unreadable images, conflicting patient data within a
    study) are listed in the result with their row numbers; they never stop the run.
    """
    out = Path(out_dir)
    result = ScanResult()
    for item in convert_rows(manifest, result):
        if isinstance(item, BadRow):
            if on_row:
                on_row(item, 0)
            continue
        uids = item.uids
        target = out / uids["study"] / uids["series"] / f"{uids['instance']}.dcm"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.data)
        except OSError as e:
            raise StorageError(f"{target}: cannot write: {e.strerror or e}") from e
        result.written.append((item.row.row, target))
        if on_row:
            on_row(item.row, item.source_size)
    return result


def store_manifest(
    manifest: str | Path,
    data_dir: str | Path,
    *,
    wait: float = 0.0,
    on_row: RowCallback | None = None,
    batch_files: int = 64,
    batch_bytes: int = batch_mod.DEFAULT_BATCH_BYTES,
) -> ScanResult:
    """Convert every good manifest row and store it in the archive at ``data_dir``.

    The instances go through the importer of ``duckpacs import``
    (:class:`~duckpacs.ingest.importer.Importer`): deduplicated by SOP Instance UID and
    SHA-256 against the index, stored durably, then indexed, in batches. Because conversion
    is deterministic, a rerun of the same manifest finds every instance already archived and
    stores nothing. A row whose UID is archived with other bytes (the manifest was edited
    between runs) is reported as a bad row, the archived copy is kept.

    Raises
    ------
    ArchiveLockedError : another process (``duckpacs serve``, an import) writes the archive
        and it did not let go within ``wait`` seconds.
    """
    data = Path(data_dir)
    result = ScanResult(archive=data)
    with importer_mod.open_importer(data, wait) as importer:
        pending: list[Converted] = []
        size = 0
        for item in convert_rows(manifest, result):
            if isinstance(item, BadRow):
                if on_row:
                    on_row(item, 0)
                continue
            pending.append(item)
            size += len(item.data)
            if len(pending) >= batch_files or size >= batch_bytes:
                _store_batch(importer, pending, result, on_row)
                pending, size = [], 0
        if pending:
            _store_batch(importer, pending, result, on_row)
    result.stored = importer.counts.stored
    result.already = importer.counts.already
    return result


def _store_batch(
    importer: importer_mod.Importer,
    items: list[Converted],
    result: ScanResult,
    on_row: RowCallback | None,
) -> None:
    payloads = [Payload(_source_item(c), c.data) for c in items]
    for item, outcome in zip(items, importer(payloads), strict=True):
        if outcome is None:
            result.archived.append((item.row.row, item.uids["instance"]))
            if on_row:
                on_row(item.row, item.source_size)
        else:
            bad = BadRow(item.row.row, outcome)
            result.bad_rows.append(bad)
            if on_row:
                on_row(bad, 0)
    result.bad_rows.sort(key=lambda b: b.row)


def _source_item(item: Converted) -> SourceItem:
    data = item.data
    return SourceItem(f"row {item.row.row}", len(data), "part10", "scan", lambda: data)


def _check_patient(row: ScanRow, patients: dict[str, tuple[str, str, str, int]]) -> None:
    """The same Patient ID must carry the same name, birth date and sex as in earlier rows
    that were converted (rows that failed do not count)."""
    seen = patients.get(row.patient_id)
    mine = (row.patient_name, row.birth_date, row.sex)
    if seen is not None and seen[:3] != mine:
        raise ValueError(
            f"patient {row.patient_id} is {'/'.join(seen[:3])} in row {seen[3]} "
            f"but {'/'.join(mine)} here"
        )


def _series_for(row: ScanRow, series: dict[tuple[object, ...], tuple[str, int]]) -> dict[str, str]:
    """Study and series UIDs of a row (from its keys) and the series' number in its study."""
    key = row.study_key()
    series_key = (key, row.modality, row.body_part, row.laterality)
    if series_key not in series:
        number = 1 + sum(1 for k in series if k[0] == key)
        series[series_key] = (str(_uid("series", *key, *series_key[1:])), number)
    series_uid, series_number = series[series_key]
    return {
        "study": str(_uid("study", *key)),
        "series": series_uid,
        "series_number": str(series_number),
    }


def _instance_uid(series_uid: str, digest: str, result: ScanResult) -> str:
    """The SOP Instance UID: the series and the pixels' SHA-256; the same image twice in a
    series (a re-scan) gets a distinct UID by its occurrence."""
    occurrence = result.digests.get((series_uid, digest), 0) + 1
    result.digests[(series_uid, digest)] = occurrence
    return str(_uid("instance", series_uid, digest, occurrence))
