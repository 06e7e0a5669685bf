"""The synthetic corpus: DICOM files this project builds itself, so no test needs files from
outside the repository (issue 27). ``build()`` returns every file as bytes; ``write()`` lays
them out in folders that stand in for the kinds of the optional shared corpus:

``mr_series/``   one header-heavy classic MR series (private blocks with a large XML
                 protocol, a private sequence inside a private sequence, standard nested
                 sequences), like a vendor series whose headers outweigh its pixels;
``gz/``          a second series of that study, each file gzip-compressed (``.dcm.gz``);
``no_preamble/`` a slice of that study written without the 128-byte preamble and ``DICM``;
``study/``       one CT study of three series (localizer, soft tissue, lung);
``enhanced_mr/`` Enhanced MR multi-frame instances with functional groups, named ``.img``
                 (and one without extension): DICOM recognised by content, not by name;
``syntaxes/``    one MR slice in each transfer syntax (PS3.5 A.4: JPEG baseline, JPEG
                 lossless, JPEG-LS, JPEG 2000, RLE; PS3.5 A.5 deflate; explicit big endian),
                 and multi-frame encapsulated files with a Basic Offset Table;
``charsets/``    one image per Specific Character Set (PS3.3 C.12.1.1.2), names in Latin-1,
                 Cyrillic, Greek, UTF-8, GB18030 and ISO 2022 Japanese.

Everything derives from ``SEED``: pixel noise from seeded generators, UIDs are
name-based UUIDs, dates fixed. Two builds with the same pydicom and
codecs are byte-identical, so a failure reproduces. Compressed files are encoded with pydicom's
own encoders (RLE, JPEG 2000) or imagecodecs (JPEG, JPEG-LS), both installed with the dev
extras, and decode back to the original pixels where the syntax is lossless.
"""

from __future__ import annotations

import copy
import gzip
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

SEED = 27

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

MR_SERIES_SIZE = 60
GZ_SERIES_SIZE = 12
ENHANCED_FRAMES = 6
SIZE = 64  # rows = columns of every MR and CT image

# Private tags the index tests match on (PS3.5 7.8.1: block xx of (gggg,00xx) owns gggg,xxyy).
PRIVATE_TAGS = {0x00091010: "SYNTH^SERIES", 0x00111010: "BODY-27", 0x00211201: "ACQUISITION"}
PROTOCOL_TAG = 0x700D1016


def uid(*parts: object) -> str:
    """A deterministic UID under 2.25 (PS3.5 B.2): a name-based UUID (RFC 4122 version 5) of
    the seed and ``parts``. pydicom's generate_uid is random under 2.25, whatever its input."""
    name = "/".join(map(str, (SEED, *parts)))
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, f'duckpacs.tests.synthetic/{name}').int}"


@dataclass(frozen=True)
class Patient:
    id: str
    name: str
    birth_date: str
    sex: str


MR_PATIENT = Patient("SYN-0001", "Rossi^Anna^Maria", "19710304", "F")
CT_PATIENT = Patient("SYN-0002", "Okafor^Chidi", "19580917", "M")
TS_PATIENT = Patient("SYN-0003", "Lindqvist^Eva", "19850612", "F")
ENH_PATIENT = Patient("SYN-0004", "Haddad^Karim", "19900101", "M")


# -- pixels -------------------------------------------------------------------------------


def phantom(rng: np.random.Generator, z: int, signed: bool = False) -> np.ndarray:
    """A head-like phantom slice (ellipses, a slice-dependent lesion, mild noise): 12-bit
    values, or CT numbers when ``signed``."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    c = (SIZE - 1) / 2
    skull = ((x - c) / (SIZE * 0.44)) ** 2 + ((y - c) / (SIZE * 0.38)) ** 2
    brain = ((x - c) / (SIZE * 0.38)) ** 2 + ((y - c) / (SIZE * 0.32)) ** 2
    lesion = ((x - c - 8 - z % 5) / 5.0) ** 2 + ((y - c + 6) / 4.0) ** 2
    img = np.where(skull < 1, 900.0, 20.0)
    img = np.where(brain < 1, 1500.0 + 300.0 * np.cos(x / 9.0 + z / 7.0), img)
    img = np.where(lesion < 1, 2600.0, img)
    img += rng.normal(0.0, 6.0, img.shape)
    if signed:  # CT numbers: air -1000, tissue around +40
        return np.clip(img - 1000.0, -1024, 3071).astype(np.int16)
    return np.clip(img, 0, 4095).astype(np.uint16)


def _pixels(ds: Dataset, frames: list[np.ndarray]) -> None:
    """Native monochrome pixels (PS3.3 C.7.6.3): 16 bits allocated, 12 stored for MR,
    16 signed for CT."""
    signed = frames[0].dtype == np.int16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = frames[0].shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if signed else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = b"".join(f.astype("<i2" if signed else "<u2").tobytes() for f in frames)


# -- encoding -----------------------------------------------------------------------------


def _meta(ds: Dataset, syntax: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    # Fixed, so the bytes do not change with the installed pydicom's version.
    meta.ImplementationClassUID = uid("implementation")
    meta.ImplementationVersionName = "DUCKPACS_TEST"
    ds.file_meta = meta


def encode(ds: Dataset, syntax: str = ExplicitVRLittleEndian, preamble: bool = True) -> bytes:
    """``ds`` as a Part 10 file (PS3.10 7.1) in ``syntax`` (its pixels already encoded)."""
    _meta(ds, syntax)
    buf = BytesIO()
    if preamble:
        ds.preamble = b"\0" * 128
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    else:  # the meta group straight away, as some old writers did
        ds.preamble = None
        pydicom.dcmwrite(buf, ds, enforce_file_format=False)
    return buf.getvalue()


def _frames(ds: Dataset) -> list[np.ndarray]:
    n = int(ds.get("NumberOfFrames", 1) or 1)
    dtype = "<i2" if ds.PixelRepresentation else "<u2"
    flat = np.frombuffer(ds.PixelData, dtype=dtype)
    return list(flat.reshape(n, ds.Rows, ds.Columns))


def _encapsulated(ds: Dataset, fragments: list[bytes]) -> None:
    # A Basic Offset Table for multi-frame data, so each frame is found without a scan
    # (PS3.5 A.4); an empty one for a single frame, as most modalities write.
    ds.PixelData = encapsulate(fragments, has_bot=len(fragments) > 1)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True


def _lossy(ds: Dataset, method: str, ratio: float) -> None:
    """Lossy Image Compression attributes (PS3.3 C.7.6.1.1.5)."""
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = f"{ratio:.2f}"
    ds.LossyImageCompressionMethod = method


def in_syntax(ds: Dataset, syntax: str) -> bytes:
    """A copy of ``ds`` (native 16-bit pixels) encoded in ``syntax``."""
    out = copy.deepcopy(ds)
    frames = _frames(ds)
    raw = sum(f.nbytes for f in frames)
    if syntax == ExplicitVRBigEndian:  # OW values are byte-swapped too (PS3.5 7.3)
        dtype = ">i2" if ds.PixelRepresentation else ">u2"
        out.PixelData = b"".join(f.astype(dtype).tobytes() for f in frames)
    elif syntax in (RLELossless, JPEG2000Lossless):
        out.compress(
            syntax, np.stack(frames) if len(frames) > 1 else frames[0], generate_instance_uid=False
        )
        return encode(out, syntax)
    elif syntax == JPEG2000:
        out.compress(syntax, frames[0], generate_instance_uid=False, j2k_cr=[12])
        _lossy(out, "ISO_15444_1", raw / len(out.PixelData))
        return encode(out, syntax)
    elif syntax == JPEGLosslessSV1:  # Process 14, first-order prediction (SOF3)
        fragments = [
            imagecodecs.jpeg8_encode(f, lossless=True, predictor=1, bitspersample=12)
            for f in frames
        ]
        _encapsulated(out, fragments)
    elif syntax == JPEGLSLossless:
        _encapsulated(out, [imagecodecs.jpegls_encode(f, level=0) for f in frames])
    elif syntax == JPEGLSNearLossless:
        fragments = [imagecodecs.jpegls_encode(f, level=2) for f in frames]
        _encapsulated(out, fragments)
        _lossy(out, "ISO_14495_1", raw / sum(map(len, fragments)))
    elif syntax == JPEGBaseline8Bit:  # 8 bits per sample only (PS3.5 8.2.1)
        eight = [(f >> 4).astype(np.uint8) for f in frames]
        out.BitsAllocated, out.BitsStored, out.HighBit = 8, 8, 7
        fragments = [imagecodecs.jpeg8_encode(f, level=90) for f in eight]
        _encapsulated(out, fragments)
        _lossy(out, "ISO_10918_1", raw / sum(map(len, fragments)))
    return encode(out, syntax)


# -- attributes ---------------------------------------------------------------------------


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _common(
    patient: Patient, study: str, series: str, number: int, sop_class: str, sop: str
) -> Dataset:
    """Patient, study, series, equipment and SOP Common attributes shared by every image."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240312"
    ds.StudyTime, ds.SeriesTime = "081500", f"0816{number % 60:02d}"
    ds.AccessionNumber = f"A{study[-8:]}"
    ds.Manufacturer = "DUCKPACS SYNTHETIC"
    ds.InstitutionName = "Synthetic Clinic of Testing"
    ds.InstitutionAddress = "1 Test Street, Nowhere"
    ds.ReferringPhysicianName = "Ward^Helen"
    ds.StationName = "SYNTH01"
    ds.OperatorsName = "Tech^Sam"
    ds.ManufacturerModelName = "Phantom 27"
    ds.PatientName, ds.PatientID = patient.name, patient.id
    ds.PatientBirthDate, ds.PatientSex = patient.birth_date, patient.sex
    ds.PatientAge = f"{2024 - int(patient.birth_date[:4]):03d}Y"
    ds.PatientWeight = "71"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.StudyID = "27"
    return ds


def _position(ds: Dataset, z: int, thickness: float) -> None:
    ds.ImagePositionPatient = [-112.0, -120.0, round(-40.0 + z * thickness, 2)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = round(-40.0 + z * thickness, 2)
    ds.PixelSpacing = [3.5, 3.5]
    ds.SliceThickness = thickness


def protocol_xml(rng: np.random.Generator, entries: int) -> bytes:
    """A vendor-style XML acquisition protocol (even length, PS3.5 7.1.1)."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<protocol>"]
    names = ("te", "tr", "fov", "matrix", "nex", "bandwidth", "coil", "gradient", "sat", "shim")
    for i in range(entries):
        name = names[i % len(names)]
        value = float(rng.integers(1, 5000)) / 10
        lines.append(f'  <param id="{i:05d}" name="{name}_{i // len(names)}" value="{value}"/>')
    lines.append("</protocol>")
    text = "\n".join(lines).encode()
    return text + b" " * (len(text) % 2)


def _private_blocks(ds: Dataset, protocol: bytes, z: int) -> None:
    """Private data (PS3.5 7.8): creators, a VM 3 LO, a large OB protocol, and a private
    sequence whose items hold another private sequence."""
    ds.private_block(0x0009, "DUCKPACS SYNTH 01", create=True).add_new(
        0x10, "LO", PRIVATE_TAGS[0x00091010]
    )
    ds.private_block(0x0011, "DUCKPACS SYNTH 02", create=True).add_new(
        0x10, "LO", PRIVATE_TAGS[0x00111010]
    )
    block = ds.private_block(0x700D, "DUCKPACS SYNTH 03", create=True)
    block.add_new(0x16, "LO", ["USER PROTO", "HEAD", "SYN-27"])
    block.add_new(0x19, "OB", protocol)
    items = []
    for k, chunk in enumerate((protocol[:1500], b"SLICE%04d " % z, protocol[-800:])):
        item = Dataset()
        inner = item.private_block(0x0029, "DUCKPACS SYNTH 04", create=True)
        inner.add_new(0x90, "OB", chunk + b" " * (len(chunk) % 2))
        leaf = Dataset()
        leaf.private_block(0x0029, "DUCKPACS SYNTH 04", create=True).add_new(0x91, "DS", str(k))
        inner.add_new(0x02, "SQ", Sequence([leaf]))
        items.append(item)
    ds.private_block(0x0029, "DUCKPACS SYNTH 04", create=True).add_new(0x01, "SQ", Sequence(items))


def _mr_slice(
    rng: np.random.Generator, series: str, number: int, z: int, protocol: bytes, sops: list[str]
) -> Dataset:
    study = uid("mr-study")
    ds = _common(MR_PATIENT, study, series, number, MR_IMAGE, sops[z])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.Modality = "MR"
    ds.StudyDescription = "MRI BRAIN WITHOUT CONTRAST"
    ds.SeriesDescription = {1: "LOCALIZER", 2: "AX T2 FSE", 3: "SAG T1 SE"}[number]
    ds.ProtocolName = "BRAIN ROUTINE"
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "SK", "FC"
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "4000", "2.81", "16"
    ds.MagneticFieldStrength, ds.FlipAngle = "1.5", "90"
    ds.ReceiveCoilName, ds.TransmitCoilName = "HEAD 8CH", "BODY"
    ds.SpacingBetweenSlices = "5"
    ds.PatientPosition = "HFS"
    ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = number, z + 1, 1
    ds.FrameOfReferenceUID = uid("mr-frame")
    ds.PositionReferenceIndicator = ""
    _position(ds, z, 5.0)
    ds.WindowCenter, ds.WindowWidth = "1400", "2800"
    ds.ContentTime = f"0817{z % 60:02d}"
    ds.PerformedProcedureStepID = "PPS-SYN-27"
    ppss = Dataset()
    ppss.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    ppss.ReferencedSOPInstanceUID = uid("mr-pps")
    ds.ReferencedPerformedProcedureStepSequence = [ppss]
    refs = []
    for other in (0, len(sops) // 2, len(sops) - 1):
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = MR_IMAGE, sops[other]
        refs.append(ref)
    ds.ReferencedImageSequence = refs
    request = Dataset()  # two levels of standard nesting
    request.RequestedProcedureID = "RP-27"
    request.ScheduledProcedureStepID = "SPS-27"
    request.ScheduledProtocolCodeSequence = [_code("BRAIN", "99SYNTH", "Brain routine")]
    ds.RequestAttributesSequence = [request]
    _private_blocks(ds, protocol, z)
    _pixels(ds, [phantom(rng, z)])
    return ds


def mr_series(number: int, count: int) -> list[Dataset]:
    """``count`` slices of one classic MR series of the MR study (PS3.3 A.4)."""
    rng = np.random.default_rng([SEED, number])
    protocol = protocol_xml(rng, 900)
    series = uid("mr-series", number)
    sops = [uid("mr-sop", number, z) for z in range(count)]
    return [_mr_slice(rng, series, number, z, protocol, sops) for z in range(count)]


def ct_study() -> list[Dataset]:
    """One CT study of three series: a localizer, soft tissue and lung reconstructions."""
    rng = np.random.default_rng([SEED, 100])
    study = uid("ct-study")
    plans = [(1, "LOCALIZER", "SCOUT", 1, ["ORIGINAL", "PRIMARY", "LOCALIZER"]),
             (2, "CHEST 5MM STANDARD", "STANDARD", 4, ["ORIGINAL", "PRIMARY", "AXIAL"]),
             (3, "CHEST 1MM LUNG", "LUNG", 4, ["ORIGINAL", "PRIMARY", "AXIAL"])]  # fmt: skip
    out = []
    for number, description, kernel, count, image_type in plans:
        series = uid("ct-series", number)
        for z in range(count):
            ds = _common(CT_PATIENT, study, series, number, CT_IMAGE, uid("ct-sop", number, z))
            ds.ImageType = image_type
            ds.Modality = "CT"
            ds.StudyDescription = "CT CHEST WITH CONTRAST"
            ds.SeriesDescription = description
            ds.BodyPartExamined = "CHEST"
            ds.KVP, ds.XRayTubeCurrent, ds.ExposureTime = "120", "250", "500"
            ds.ConvolutionKernel = kernel
            ds.PatientPosition = "FFS"
            ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = number, z + 1, number
            ds.FrameOfReferenceUID = uid("ct-frame")
            _position(ds, z, 5.0 if number < 3 else 1.0)
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
            ds.WindowCenter, ds.WindowWidth = (
                ("40", "400") if kernel != "LUNG" else ("-600", "1500")
            )
            ds.ContentTime = f"0820{z:02d}"
            ds.ContrastBolusAgentSequence = [_code("C-B0322", "SRT", "Iopamidol")]
            ds.ContrastBolusAgent = "IOPAMIDOL 370"
            _pixels(ds, [phantom(rng, z, signed=True)])
            out.append(ds)
    return out


def _functional_groups(ds: Dataset, frames: int) -> None:
    """Enhanced MR functional groups (PS3.3 C.7.6.16) and a one-stack dimension index."""
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [3.5, 3.5], 4.0
    shared.PixelMeasuresSequence = [measures]
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = [orientation]
    timing = Dataset()
    timing.RepetitionTime, timing.FlipAngle, timing.EchoTrainLength = 2300.0, 9.0, 1
    shared.MRTimingAndRelatedParametersSequence = [timing]
    echo = Dataset()
    echo.EffectiveEchoTime = 2.81
    shared.MREchoSequence = [echo]
    ds.SharedFunctionalGroupsSequence = [shared]
    dims = ds.DimensionOrganizationUID = uid("enh-dimensions")
    index = []
    for pointer, group in ((0x00209056, 0x00209111), (0x00209057, 0x00209111)):
        item = Dataset()
        item.DimensionOrganizationUID = dims
        item.DimensionIndexPointer, item.FunctionalGroupPointer = pointer, group
        index.append(item)
    organization = Dataset()
    organization.DimensionOrganizationUID = dims
    ds.DimensionOrganizationSequence = [organization]
    ds.DimensionIndexSequence = index
    per_frame = []
    for f in range(frames):
        item = Dataset()
        content = Dataset()
        content.StackID, content.InStackPositionNumber = "1", f + 1
        content.DimensionIndexValues = [1, f + 1]
        item.FrameContentSequence = [content]
        position = Dataset()
        position.ImagePositionPatient = [-112.0, -120.0, -20.0 + 4.0 * f]
        item.PlanePositionSequence = [position]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame


def enhanced_mr(count: int) -> list[Dataset]:
    """``count`` Enhanced MR Image instances of one series, ENHANCED_FRAMES frames each."""
    rng = np.random.default_rng([SEED, 200])
    study, series = uid("enh-study"), uid("enh-series")
    out = []
    for n in range(count):
        ds = _common(ENH_PATIENT, study, series, 11, ENHANCED_MR_IMAGE, uid("enh-sop", n))
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.Modality = "MR"
        ds.StudyDescription = "MRI KNEE"
        ds.SeriesDescription = "t1_tse_sag"
        ds.SeriesNumber, ds.InstanceNumber = 11, n + 1
        ds.ContentTime = f"0900{n:02d}"
        ds.AcquisitionDateTime = f"20240312090{n}00"
        ds.FrameOfReferenceUID = uid("enh-frame")
        ds.PositionReferenceIndicator = ""
        ds.ContentQualification = "PRODUCT"
        ds.ImageComments = f"enhanced {n + 1} of {count}"
        ds.PresentationLUTShape = "IDENTITY"
        ds.BurnedInAnnotation = "NO"
        ds.LossyImageCompression = "00"
        ds.NumberOfFrames = ENHANCED_FRAMES
        ds.AcquisitionContrast = "T1"
        ds.private_block(0x0021, "DUCKPACS SYNTH 05", create=True)  # block 0x10
        ds.private_block(0x0021, "DUCKPACS SYNTH 06", create=True)  # block 0x11
        ds.private_block(0x0021, "DUCKPACS SYNTH 07", create=True).add_new(
            0x01, "LO", PRIVATE_TAGS[0x00211201]
        )  # block 0x12, so (0021,1201)
        _functional_groups(ds, ENHANCED_FRAMES)
        _pixels(ds, [phantom(rng, 3 * n + f) for f in range(ENHANCED_FRAMES)])
        out.append(ds)
    return out


def syntax_slice(frames: int = 1) -> Dataset:
    """The MR slice (or multi-frame instance) that ``syntaxes/`` holds in every syntax."""
    rng = np.random.default_rng([SEED, 300, frames])
    study, series = uid("ts-study"), uid("ts-series")
    ds = _common(TS_PATIENT, study, series, 5, MR_IMAGE, "")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.Modality = "MR"
    ds.StudyDescription = "TRANSFER SYNTAX TEST"
    ds.SeriesDescription = "one slice, every syntax"
    ds.SeriesNumber, ds.AcquisitionNumber = 5, 1
    ds.FrameOfReferenceUID = uid("ts-frame")
    ds.EchoTime, ds.RepetitionTime = "15", "500"
    _position(ds, 0, 5.0)
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = 0x00180050  # Slice Thickness: frames are slices
    _pixels(ds, [phantom(rng, f) for f in range(frames)])
    return ds


# (file name, transfer syntax, frames); each becomes its own instance of the series.
SYNTAXES = [
    ("01_explicit_le.dcm", ExplicitVRLittleEndian, 1),
    ("02_implicit_le.dcm", ImplicitVRLittleEndian, 1),
    ("03_explicit_be.dcm", ExplicitVRBigEndian, 1),
    ("04_deflated.dcm", DeflatedExplicitVRLittleEndian, 1),
    ("05_rle.dcm", RLELossless, 1),
    ("06_jpeg_lossless_sv1.dcm", JPEGLosslessSV1, 1),
    ("07_jpeg_ls_lossless.dcm", JPEGLSLossless, 1),
    ("08_jpeg_ls_near_lossless.dcm", JPEGLSNearLossless, 1),
    ("09_j2k_lossless.dcm", JPEG2000Lossless, 1),
    ("10_j2k.dcm", JPEG2000, 1),
    ("11_jpeg_baseline.dcm", JPEGBaseline8Bit, 1),
    ("12_rle_3frames.dcm", RLELossless, 3),
    ("13_j2k_lossless_3frames.dcm", JPEG2000Lossless, 3),
    ("14_jpeg_ls_lossless_3frames.dcm", JPEGLSLossless, 3),
]

LOSSLESS = {
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEG2000Lossless,
}

# (Specific Character Set, patient name, institution): PS3.3 C.12.1.1.2, PS3.5 6.1.
CHARSETS = [
    ("ISO_IR 100", "Müller^Jürgen", "Clínica São João"),
    ("ISO_IR 144", "Иванов^Пётр", "Городская больница"),
    ("ISO_IR 126", "Παπαδόπουλος^Νίκος", "Νοσοκομείο Αθηνών"),
    ("ISO_IR 192", "Nguyễn^Thị Lan", "Bệnh viện Chợ Rẫy"),
    ("GB18030", "王^小明", "北京协和医院"),
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう", "Hospital"),
]


def charset_images() -> list[Dataset]:
    """One small secondary capture per character set, a patient of its own each."""
    out = []
    for i, (charset, name, institution) in enumerate(CHARSETS):
        patient = Patient(f"SYN-1{i:03d}", name, "19700101", "O")
        ds = _common(
            patient, uid("cs-study", i), uid("cs-series", i), 1, SECONDARY_CAPTURE, uid("cs-sop", i)
        )
        ds.SpecificCharacterSet = charset
        ds.InstitutionName = institution
        ds.Modality, ds.ConversionType = "OT", "WSD"
        ds.StudyDescription = f"character set {i + 1}"
        ds.SeriesNumber, ds.InstanceNumber = 1, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 16
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = bytes((x * 16 + y + i) % 256 for x in range(16) for y in range(16))
        out.append(ds)
    return out


# -- the tree -----------------------------------------------------------------------------

MR_SERIES, GZ, NO_PREAMBLE, STUDY = "mr_series", "gz", "no_preamble", "study"
ENHANCED, SYNTAX_DIR, CHARSET_DIR = "enhanced_mr", "syntaxes", "charsets"


def _each(
    datasets: list[Dataset], name: Callable[[int, Dataset], str]
) -> Iterator[tuple[str, bytes]]:
    for i, ds in enumerate(datasets):
        yield name(i, ds), encode(ds)


def build() -> dict[str, bytes]:
    """Every file of the synthetic corpus: {relative path: bytes}."""
    files: dict[str, bytes] = {}
    files.update(_each(mr_series(2, MR_SERIES_SIZE), lambda i, _: f"{MR_SERIES}/{i + 1:04d}.dcm"))
    for i, ds in enumerate(mr_series(3, GZ_SERIES_SIZE)):
        files[f"{GZ}/IM_{i + 1:04d}.dcm.gz"] = gzip.compress(encode(ds), mtime=0)
    (localizer,) = mr_series(1, 1)
    files[f"{NO_PREAMBLE}/IM0001"] = encode(localizer, preamble=False)
    files.update(
        _each(ct_study(), lambda _, ds: f"{STUDY}/S{ds.SeriesNumber}/I{ds.InstanceNumber:03d}.dcm")
    )
    enhanced = enhanced_mr(4)
    files.update(_each(enhanced[:3], lambda i, _: f"{ENHANCED}/011-{i + 1:04d}.img"))
    files[f"{ENHANCED}/IM000004"] = encode(enhanced[3])
    for i, (name, syntax, frames) in enumerate(SYNTAXES):
        ds = syntax_slice(frames)
        ds.SOPInstanceUID = uid("ts-sop", i)
        ds.InstanceNumber = i + 1
        files[f"{SYNTAX_DIR}/{name}"] = in_syntax(ds, syntax)
    files.update(_each(charset_images(), lambda i, _: f"{CHARSET_DIR}/cs{i + 1}.dcm"))
    return files


def write(dest: Path) -> list[Path]:
    """Writes the synthetic corpus under ``dest``; returns the files' paths, sorted."""
    out = []
    for rel, data in build().items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out.append(path)
    return sorted(out)
