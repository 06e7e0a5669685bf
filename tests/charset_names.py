"""Person names in every character set the standard's examples cover, and files that carry
them, built here with pydicom (PS3.5 Annexes H, I, J and the single-byte sets of PS3.3
C.12.1.1.2).

Each entry is (Specific Character Set, name): the Japanese, Korean and Chinese entries are
the multi-group names of PS3.5 H.3.1, H.3.2, I.2, J.1, J.2 and J.3; the others are names
written in each single-byte set. Every file is a small secondary capture of its own patient
and study, and no name is a component group of another (C-FIND may match a person name on
any of its groups), so a query by name has exactly one answer.
"""

from __future__ import annotations

import struct
from io import BytesIO

import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import PersonName

from tests.synthetic import SECONDARY_CAPTURE, uid

NAMES: list[tuple[str | list[str], str]] = [
    ("ISO_IR 100", "Buc^Jérôme"),  # Latin-1 (French)
    ("ISO_IR 101", "Dvořák^Antonín"),  # Latin-2 (Czech)
    ("ISO_IR 148", "Çelik^Şükrü"),  # Latin-5 (Turkish)
    ("ISO_IR 126", "Διονυσιος^Ηλίας"),  # Greek
    ("ISO_IR 144", "Люкceмбypг^Пётр"),  # Cyrillic
    ("ISO_IR 138", "שרון^דבורה"),  # Hebrew
    ("ISO_IR 127", "قباني^لنزار"),  # Arabic
    ("ISO_IR 166", "สมชาย^ใจดี"),  # Thai (TIS 620)
    ("ISO_IR 13", "ｽｽﾞｷ^ｲﾁﾛｳ"),  # JIS X 0201 Katakana
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),  # PS3.5 H.3.1
    (["ISO 2022 IR 13", "ISO 2022 IR 87"], "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),  # H.3.2
    (["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동"),  # PS3.5 I.2
    ("ISO_IR 192", "Wang^XiaoDong=王^小東="),  # PS3.5 J.1 (UTF-8)
    ("GB18030", "Wang^XiaoDong=王^小东="),  # PS3.5 J.2
    (["", "ISO 2022 IR 58"], "Zhang^XiaoDong=张^小东="),  # PS3.5 J.3
]


# PS3.5 J.3 as the standard writes it. pydicom writes GB 2312 without the escape sequence
# ESC $ ) A and reads the escape back as text, so this name's bytes and its decoding are
# done here (``encoded_name``, ``decode_name``).
J3_BYTES = b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab="
J3_ESCAPE = b"\x1b$)A"


def terms(charset: str | list[str] | None) -> list[str]:
    if not charset:
        return []
    return [charset] if isinstance(charset, str) else list(charset)


def charset_text(charset: str | list[str]) -> str:
    """The value of (0008,0005) as written in a file: values joined by a backslash."""
    return charset if isinstance(charset, str) else "\\".join(charset)


def groups(name: str) -> tuple[str, str, str]:
    """A person name's (alphabetic, ideographic, phonetic) groups (PS3.5 6.2.1): names that
    differ only by empty trailing groups (``A=B=`` and ``A=B``) are the same name."""
    parts = [*name.split("="), "", ""]
    return parts[0], parts[1], parts[2]


def encoded_name(i: int) -> bytes:
    """Entry ``i``'s name as bytes in its own character set, padded to even length."""
    charset, name = NAMES[i]
    if "ISO 2022 IR 58" in terms(charset):
        raw = J3_BYTES
    else:
        raw = PersonName(name).encode(convert_encodings(terms(charset)))
    return raw + b" " if len(raw) % 2 else raw


def decode_name(raw: bytes, charset: str | list[str] | None) -> str:
    """A person name's bytes decoded with the Specific Character Set they declare (pydicom;
    GB 2312 in ISO 2022, which pydicom misreads, by the codec after its escapes)."""
    raw = raw.rstrip(b" \0")
    declared = [t.strip() for t in terms(charset)]
    if "ISO 2022 IR 58" in declared:
        return raw.replace(J3_ESCAPE, b"").decode("gb2312")
    return str(PersonName(raw, convert_encodings(declared or [""])))


def element(tag: int, vr: str, value: bytes) -> bytes:
    """One Explicit VR Little Endian element with a short header, padded to even length."""
    if len(value) % 2:
        value += b"\0" if vr == "UI" else b" "
    group, elem = divmod(tag, 0x10000)
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def patient_id(i: int) -> str:
    return f"CS-{i:02d}"


def name_file(i: int) -> bytes:
    """The Part 10 file of entry ``i`` of :data:`NAMES`, written by pydicom in its own set."""
    charset, name = NAMES[i]
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = uid("names-sop", i)
    ds.StudyInstanceUID = uid("names-study", i)
    ds.SeriesInstanceUID = uid("names-series", i)
    ds.PatientName = name
    ds.PatientID = patient_id(i)
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240102", "101500", f"N{i}"
    ds.AccessionNumber = f"ACC-N{i}"
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(range(i, i + 64))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = uid("implementation")
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    # The name's bytes as encoded_name gives them (pydicom keeps a raw element of a dataset
    # it read as it is when writing it back in the same encoding).
    ds = pydicom.dcmread(BytesIO(buf.getvalue()))
    raw = encoded_name(i)
    ds[0x00100010] = RawDataElement(Tag(0x00100010), "PN", len(raw), raw, 0, False, True)
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()
