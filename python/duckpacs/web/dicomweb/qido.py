"""QIDO-RS (PS3.18 10.6): search for studies, series and instances, answered in DICOM JSON.

Query parameters are matching keys (keywords or tags) with the C-FIND rules of the index,
plus the controls ``limit``, ``offset``, ``includefield`` and ``fuzzymatching``. Each result
carries the default attributes of its level, those asked for, and its Retrieve URL.
"""

from __future__ import annotations

import math
from typing import Any

from pydicom.datadict import dictionary_VR
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from duckpacs import _core
from duckpacs.web.auth import require
from duckpacs.web.dicomweb.common import (
    DICOM_JSON,
    SERIES,
    STUDY,
    Service,
    check_json_acceptable,
    get_routes,
    int_param,
    keyword_of,
)
from duckpacs.web.errors import bad_request

MAX_LIMIT = 10000

# PS3.18 Table 10.6.3-3, -4, -5: attributes returned by default at each level.
DEFAULT_KEYS = {
    "study": [
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ],
    "series": [
        "Modality",
        "SeriesDescription",
        "SeriesInstanceUID",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
        "StudyInstanceUID",
    ],
    "instance": [
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
        "StudyInstanceUID",
        "SeriesInstanceUID",
    ],
}
# Value representations the index matches as numbers (PS3.5 6.2).
NUMERIC_VRS = {"IS", "DS", "FL", "FD", "US", "UL", "SS", "SL", "SV", "UV"}
QIDO_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}


class Qido(Service):
    """The search resources over one archive."""

    def routes(self) -> list[Route]:
        s, r = STUDY, SERIES
        return get_routes(
            self.prefix,
            [
                ("/studies", self.qido_studies),
                ("/series", self.qido_series),
                ("/instances", self.qido_instances),
                (s + "/series", self.qido_series),
                (s + "/instances", self.qido_instances),
                (s + r + "/instances", self.qido_instances),
            ],
        )

    def qido_studies(self, request: Request) -> Response:
        return self._qido(request, "study")

    def qido_series(self, request: Request) -> Response:
        return self._qido(request, "series")

    def qido_instances(self, request: Request) -> Response:
        return self._qido(request, "instance")

    def _qido(self, request: Request, level: str) -> Response:
        require(request, "read")
        check_json_acceptable(request)
        query, include, include_all = self._parse_query(request)
        path = request.path_params
        if "study" in path:
            query["StudyInstanceUID"] = path["study"]
        if "series" in path:
            query["SeriesInstanceUID"] = path["series"]
        keys = list(dict.fromkeys([*DEFAULT_KEYS[level], *include, *query]))
        limit = min(int_param(request, "limit", MAX_LIMIT), MAX_LIMIT)
        offset = int_param(request, "offset", 0)
        fuzzy = request.query_params.get("fuzzymatching", "false").lower() == "true"
        rows = self.archive.find(level, query, keys, fuzzy=fuzzy, limit=limit, offset=offset)
        base = str(request.base_url).rstrip("/") + self.prefix
        answers = []
        for row in rows:
            answer = row if include_all else {k: row[k] for k in keys if k in row}
            answer["RetrieveURL"] = _retrieve_url(base, level, row)
            answers.append(answer)
        # DICOM JSON from the one producer (Rust, rust/duckpacs-core/src/parse/json.rs).
        return Response(_core.rows_json(answers).encode(), media_type=DICOM_JSON)

    def _parse_query(self, request: Request) -> tuple[dict[str, str], list[str], bool]:
        query: dict[str, str] = {}
        include: list[str] = []
        include_all = False
        for name, value in request.query_params.multi_items():
            if name == "includefield":
                for item in (v.strip() for v in value.split(",") if v.strip()):
                    if item.lower() == "all":
                        include_all = True
                        continue
                    include.append(self._keyword(item))
            elif name in QIDO_CONTROL or name == "accept":
                continue
            else:
                keyword = self._keyword(name)
                query[keyword] = _person_name(value) if _is_pn(keyword) else value
                if dictionary_VR(keyword) in NUMERIC_VRS:
                    _check_numbers(name, value)
        return query, include, include_all

    @staticmethod
    def _keyword(name: str) -> str:
        if "." in name:
            raise bad_request(f"{name}: matching on sequence items is not supported")
        keyword = keyword_of(name)
        if keyword is None:
            raise bad_request(f"{name}: not a DICOM keyword or tag")
        return keyword


def _check_numbers(name: str, value: str) -> None:
    """Numbers match numbers (the index compares them as such): 400 naming the parameter for
    anything else, rather than a value the database cannot convert."""
    for part in value.split("\\"):
        part = part.strip()
        if not part or part == "*":
            continue
        try:
            number = float(part)
        except ValueError:
            number = math.nan
        if not (math.isfinite(number) and abs(number) < 1e18):
            raise bad_request(f"{name}={value[:64]!r}: expected a number")


def _is_pn(keyword: str) -> bool:
    return dictionary_VR(keyword) == "PN"


def _person_name(value: str) -> str:
    """A person name without its empty trailing component groups: ``A=B=`` is the name
    ``A=B`` (PS3.5 6.2.1.1), as C-FIND identifiers are read."""
    return "\\".join(v.rstrip("= ") for v in value.split("\\"))


def _retrieve_url(base: str, level: str, row: dict[str, Any]) -> str:
    url = f"{base}/studies/{row.get('StudyInstanceUID')}"
    if level in ("series", "instance"):
        url += f"/series/{row.get('SeriesInstanceUID')}"
    if level == "instance":
        url += f"/instances/{row.get('SOPInstanceUID')}"
    return url
