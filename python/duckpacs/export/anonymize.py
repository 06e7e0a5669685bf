"""De-identification: the PS3.15 Annex E Basic Application Level Confidentiality Profile.

The action for each attribute comes from ``data/basic_profile.tsv``, a transcription of
PS3.15 Table E.1-1 ("Basic Prof." column) whose keywords are checked against pydicom's data
dictionary when loaded. Actions (PS3.15 E.3.1):

* ``X`` remove; ``Z`` empty (PatientName and PatientID get a pseudonym instead, which PS3.15
  allows as "dummy value"); ``D`` replace with a dummy value of the same VR; ``U`` replace a
  UID by a new one, the same new one every time the old one is met in this run, so studies,
  series and references stay consistent; ``K`` keep; ``C`` clean (treated as ``D``).
* Compound actions depend on the attribute's Type in the IOD (PS3.15 E.3.1). Without the
  module tables we take the choice that never breaks a Type 1 or 2 attribute:
  anything with ``D`` -> ``D``; ``X/Z`` -> ``Z``; ``X/Z/U*`` (reference sequences) -> keep the
  sequence and de-identify its items (their UIDs are remapped).
* Private attributes are removed (E.3.10: the Retain Safe Private option is not offered),
  as are curve data (50xx) and overlay data and comments (60xx).
* Sequences not removed are de-identified item by item with the same rules.

Afterwards Patient Identity Removed (0012,0062) is ``YES``, De-identification Method
(0012,0063) and its code sequence (0012,0064, CID 7050 code 113100) say what was done, and
Longitudinal Temporal Information Modified (0028,0303) is ``REMOVED`` (PS3.15 E.1.1, PS3.3
C.7.1.1).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import os
import secrets
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from duckpacs.errors import ConfigError, StorageError
from duckpacs.files import part10
from duckpacs.files.progress import Progress
from duckpacs.files.sources import Reject, SourceItem, discover

METHOD = "PS3.15 E.1 Basic Profile, duckpacs"  # LO: at most 64 characters
# CID 7050 De-identification Method: Basic Application Confidentiality Profile.
METHOD_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
# Dummy values per VR for the D action: valid for the VR and obviously not real data.
DUMMY: dict[str, object] = {
    "AE": "ANONYMOUS",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMOUS",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "TM": "000000",
    "UC": "ANONYMIZED",
    "UR": "",
    "UT": "ANONYMIZED",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "UL": 0,
    "US": 0,
    "SV": 0,
    "UV": 0,
}


@dataclass(frozen=True)
class Rule:
    """One row of Table E.1-1: ``group``/``element`` with ``None`` meaning any (xx)."""

    tag_text: str
    keyword: str
    action: str
    group_mask: int
    group: int
    element: int | None

    def matches(self, tag: BaseTag) -> bool:
        if tag.group & self.group_mask != self.group:
            return False
        return self.element is None or tag.element == self.element


@dataclass(frozen=True)
class ActionTable:
    """The Basic Profile actions by tag, plus repeating-group rules (50xx, 60xx)."""

    exact: dict[int, Rule]
    groups: tuple[Rule, ...]

    def rule_for(self, tag: BaseTag) -> Rule | None:
        rule = self.exact.get(int(tag))
        if rule is not None:
            return rule
        for g in self.groups:
            if g.matches(tag):
                return g
        return None

    def __len__(self) -> int:
        return len(self.exact) + len(self.groups)


def _parse_rule(tag_text: str, keyword: str, action: str) -> Rule:
    inner = tag_text.strip("()")
    group_text, element_text = inner.split(",")
    if "x" in group_text.lower():
        prefix = group_text.lower().split("x", 1)[0]
        shift = 4 * (4 - len(prefix))
        group_mask = (0xFFFF >> shift) << shift
        group = int(prefix, 16) << shift
    else:
        group_mask, group = 0xFFFF, int(group_text, 16)
    element = None if "x" in element_text.lower() else int(element_text, 16)
    if element is not None:
        known = keyword_for_tag(Tag(group, element))
        if known != keyword:
            raise ConfigError(f"basic_profile.tsv: {tag_text} is {known!r}, not {keyword!r}")
    return Rule(tag_text, keyword, action, group_mask, group, element)


@cache
def basic_profile() -> ActionTable:
    """Load Table E.1-1 (Basic Profile column) from the package data and check it."""
    text = resources.files("duckpacs.export").joinpath("data/basic_profile.tsv").read_text()
    rows = csv.DictReader(
        (line for line in text.splitlines() if line and not line.startswith("#")),
        delimiter="\t",
    )
    exact: dict[int, Rule] = {}
    groups: list[Rule] = []
    for row in rows:
        rule = _parse_rule(row["tag"], row["keyword"], row["action"])
        if rule.element is None or rule.group_mask != 0xFFFF:
            groups.append(rule)
        else:
            exact[int(Tag(rule.group, rule.element))] = rule
    return ActionTable(exact, tuple(groups))


@dataclass(frozen=True)
class Change:
    """One thing the de-identifier did: ``what`` is removed, emptied, replaced, remapped."""

    tag: str
    keyword: str
    what: str
    path: str = ""  # enclosing sequences, e.g. "ReferencedImageSequence[0]"

    def as_json(self) -> dict[str, str]:
        return {"tag": self.tag, "keyword": self.keyword, "what": self.what, "path": self.path}


def _simplify(action: str) -> str:
    """Collapse a compound action to the one that keeps every Type 1/2 attribute valid."""
    if action in ("X", "Z", "D", "U", "K"):
        return action
    if action == "C":
        return "D"
    if action.endswith("U*"):
        return "RECURSE"
    return "D" if "D" in action else "Z" if "Z" in action else "X"


class Anonymizer:
    """Applies the Basic Profile with one UID mapping for the whole run.

    Parameters
    ----------
    secret:
        Key for the UID and pseudonym derivation; random per run by default. The same secret
        gives the same new UIDs (e.g. to de-identify a study in several goes).
    patient_id, patient_name:
        Fixed replacement values; by default a pseudonym derived from the original Patient ID
        with the secret (``ANON`` + 10 hex digits), the same for every instance of a patient.
    """

    def __init__(
        self,
        *,
        secret: bytes | None = None,
        patient_id: str | None = None,
        patient_name: str | None = None,
        table: ActionTable | None = None,
    ) -> None:
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self.patient_id = patient_id
        self.patient_name = patient_name
        self.table = table if table is not None else basic_profile()
        self.uid_map: dict[str, str] = {}

    def new_uid(self, old: str) -> str:
        """The replacement of ``old`` in this run (PS3.15 E.3.1 ``U``), a 2.25 UUID-derived UID."""
        old = old.strip().rstrip("\x00")
        if not old:
            return old
        new = self.uid_map.get(old)
        if new is None:
            digest = hmac.new(self.secret, b"uid:" + old.encode(), hashlib.sha256).digest()
            new = "2.25." + str(int.from_bytes(digest[:16], "big"))  # PS3.5 B.2
            self.uid_map[old] = new
        return new

    def pseudonym(self, original_id: str) -> str:
        digest = hmac.new(self.secret, b"pid:" + original_id.encode(), hashlib.sha256)
        return "ANON" + digest.hexdigest()[:10].upper()

    def anonymize(self, ds: Dataset) -> list[Change]:
        """De-identify ``ds`` in place (and its file meta); return what was changed."""
        with warnings.catch_warnings():
            # Values are decoded lazily here; legacy files warn about each odd one.
            warnings.simplefilter("ignore", UserWarning)
            return self._anonymize(ds)

    def _anonymize(self, ds: Dataset) -> list[Change]:
        original_id = str(ds.get("PatientID", "") or "")
        changes: list[Change] = []
        self._walk(ds, changes, "")
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta:
            old = str(meta.MediaStorageSOPInstanceUID)
            meta.MediaStorageSOPInstanceUID = self.new_uid(old)
            changes.append(Change("(0002,0003)", "MediaStorageSOPInstanceUID", "remapped"))
        self._set_identity(ds, original_id)
        # Patient ID and Name are emptied by the walk (Z) and then get their pseudonym.
        changes = [c for c in changes if c.path or c.keyword not in ("PatientID", "PatientName")]
        changes.append(Change("(0010,0020)", "PatientID", "replaced (pseudonym)"))
        changes.append(Change("(0010,0010)", "PatientName", "replaced (pseudonym)"))
        return changes

    def _set_identity(self, ds: Dataset, original_id: str) -> None:
        pid = self.patient_id if self.patient_id is not None else self.pseudonym(original_id)
        ds.PatientID = pid
        ds.PatientName = self.patient_name if self.patient_name is not None else pid
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = METHOD
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = METHOD_CODE
        ds.DeidentificationMethodCodeSequence = Sequence([code])
        ds.LongitudinalTemporalInformationModified = "REMOVED"

    def _walk(self, ds: Dataset, changes: list[Change], path: str, dummy: bool = False) -> None:
        """Apply the table to ``ds``; inside a ``D`` sequence (``dummy``) removals become
        dummies, so the items keep the attributes their macro requires."""
        for elem in list(ds):
            tag = elem.tag
            if tag.is_private:
                del ds[tag]
                changes.append(Change(_tag_text(tag), "private", "removed", path))
                continue
            rule = self.table.rule_for(tag)
            action = _simplify(rule.action) if rule else "K"
            if dummy and action == "X" and elem.VR != "SQ":
                action = "D"
            keyword = elem.keyword or elem.name
            if action == "X":
                del ds[tag]
                changes.append(Change(_tag_text(tag), keyword, "removed", path))
            elif action == "Z":
                if not _is_empty(elem):
                    _empty(elem)
                    changes.append(Change(_tag_text(tag), keyword, "emptied", path))
            elif action == "D":
                if elem.VR == "SQ":
                    self._walk_items(elem, changes, path, keyword, dummy=True)
                else:
                    if _dummy(elem):
                        changes.append(Change(_tag_text(tag), keyword, "replaced", path))
            elif action == "U":
                if self._remap(elem):
                    changes.append(Change(_tag_text(tag), keyword, "remapped", path))
            elif elem.VR == "SQ":
                self._walk_items(elem, changes, path, keyword, dummy=False)

    def _walk_items(
        self, elem: DataElement, changes: list[Change], path: str, keyword: str, dummy: bool
    ) -> None:
        for i, item in enumerate(elem.value or []):
            inner = f"{path}/{keyword}[{i}]" if path else f"{keyword}[{i}]"
            self._walk(item, changes, inner, dummy)
            if dummy:
                # D on a sequence (a person's name or identification codes): every text
                # value left in its items, code meanings included, becomes a dummy.
                for sub in item:
                    if sub.VR in ("PN", "LO", "SH", "ST", "LT", "UT") and not _is_empty(sub):
                        _dummy(sub)
                        changes.append(Change(_tag_text(sub.tag), sub.keyword, "replaced", inner))

    def _remap(self, elem: DataElement) -> bool:
        if elem.VR != "UI" or _is_empty(elem):
            return False
        if elem.VM > 1:
            elem.value = [self.new_uid(str(v)) for v in elem.value]
        else:
            elem.value = self.new_uid(str(elem.value))
        return True


def _tag_text(tag: BaseTag) -> str:
    return f"({tag.group:04X},{tag.element:04X})"


def _is_empty(elem: DataElement) -> bool:
    value = elem.value
    return value is None or value == "" or value == b"" or (elem.VR == "SQ" and len(value) == 0)


def _empty(elem: DataElement) -> None:
    elem.value = Sequence() if elem.VR == "SQ" else (b"" if elem.VR in ("OB", "OW", "UN") else "")


def _dummy(elem: DataElement) -> bool:
    """Replace the value by the VR's dummy; False if it already was that value."""
    dummy = DUMMY.get(elem.VR)
    if dummy is None:  # binary VRs: an empty value is the only safe dummy
        if _is_empty(elem):
            return False
        elem.value = b""
        return True
    if elem.VR == "CS" and elem.value == dummy:
        return False
    if elem.value == dummy:
        return False
    elem.value = dummy
    return True


# --- files ------------------------------------------------------------------------------------


@dataclass
class AnonymizeReport:
    """What :func:`anonymize_files` did, for the CLI's summary and ``--json``."""

    written: list[tuple[str, str]] = field(default_factory=list)  # (source, output)
    changes: dict[str, list[Change]] = field(default_factory=dict)  # output -> changes
    rejected: list[Reject] = field(default_factory=list)
    uid_map: dict[str, str] = field(default_factory=dict)

    def removed_summary(self) -> dict[str, int]:
        """How many times each attribute was removed/emptied/replaced/remapped, by keyword."""
        counts: dict[str, int] = {}
        for changes in self.changes.values():
            for c in changes:
                key = f"{c.what}: {c.keyword}"
                counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def as_json(self) -> dict[str, object]:
        return {
            "written": [{"source": s, "output": o} for s, o in self.written],
            "changes": {o: [c.as_json() for c in cs] for o, cs in self.changes.items()},
            "summary": self.removed_summary(),
            "rejected": [{"path": r.path, "reason": r.reason} for r in self.rejected],
            "uid_map": self.uid_map,
        }


def anonymize_bytes(
    data: bytes, anonymizer: Anonymizer, *, force: bool = False
) -> tuple[bytes, list[Change], Dataset]:
    """De-identify one instance given as bytes; return the new Part 10 file's bytes."""
    ds = part10.parse(data, force=force)
    part10.ensure_file_meta(ds)
    changes = anonymizer.anonymize(ds)
    return part10.encode(ds), changes, ds


def anonymize_files(
    inputs: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    anonymizer: Anonymizer | None = None,
    *,
    progress: Progress | None = None,
) -> AnonymizeReport:
    """De-identify every instance found in ``inputs`` into ``out_dir``.

    Output files are named ``<new StudyInstanceUID>/<new SOPInstanceUID>.dcm`` so no
    original identifier appears in a path. One :class:`Anonymizer` is used for all inputs, so
    a study spread over several inputs keeps one new Study Instance UID. ``progress`` (quiet
    by default) counts instances written and inputs rejected.
    """
    anonymizer = anonymizer if anonymizer is not None else Anonymizer()
    progress = progress if progress is not None else Progress("anonymize", enabled=False)
    out = Path(out_dir)
    report = AnonymizeReport()
    with progress:
        for found in discover(inputs):
            if isinstance(found, SourceItem) and _one(found, out, anonymizer, report):
                progress.advance(found.size)
                continue
            if isinstance(found, Reject):
                report.rejected.append(found)
            progress.reject(report.rejected[-1].path, report.rejected[-1].reason)
    report.uid_map = dict(anonymizer.uid_map)
    return report


def _one(item: SourceItem, out: Path, anonymizer: Anonymizer, report: AnonymizeReport) -> bool:
    """De-identify one item into ``out``; False (and a reject in the report) if impossible."""
    try:
        data, changes, ds = anonymize_bytes(item.read(), anonymizer, force=item.kind == "dataset")
        study = str(ds.get("StudyInstanceUID", "") or "NOSTUDY")
        name = f"{ds.SOPInstanceUID}.dcm"
    except (InvalidDicomError, ValueError, AttributeError, KeyError, TypeError) as e:
        report.rejected.append(Reject(item.description, f"cannot de-identify: {e}"))
        return False
    except (OSError, EOFError, zlib.error) as e:
        report.rejected.append(Reject(item.description, f"cannot read: {e}"))
        return False
    target = out / study / name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    except OSError as e:
        raise StorageError(f"{target}: cannot write: {e.strerror or e}") from e
    report.written.append((item.description, str(target)))
    report.changes[str(target)] = changes
    return True
