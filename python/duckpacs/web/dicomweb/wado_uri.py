"""WADO-URI (PS3.18 9): one instance named by query parameters, as DICOM or as an image.

``/wado`` answers both at the server's root and below the DICOMweb prefix.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from duckpacs.dicom import transcode
from duckpacs.web import rendering
from duckpacs.web.auth import require
from duckpacs.web.dicomweb.common import Service, full_dataset, int_param
from duckpacs.web.errors import bad_request, not_acceptable, not_found
from duckpacs.web.reader import InstanceLocation


class WadoUri(Service):
    """The WADO-URI resource over one archive."""

    def routes(self) -> list[Route]:
        paths = (self.prefix + "/wado", "/wado")
        return [Route(path, self.wado_uri, methods=["GET", "HEAD"]) for path in paths]

    def wado_uri(self, request: Request) -> Response:
        require(request, "read")
        params = request.query_params
        if params.get("requestType") != "WADO":
            raise bad_request("requestType=WADO is required (PS3.18 9.1.2.1.1)")
        missing = [k for k in ("studyUID", "seriesUID", "objectUID") if not params.get(k)]
        if missing:
            raise bad_request("missing " + ", ".join(missing))
        found = self.archive.locations(
            "instance",
            {
                "StudyInstanceUID": params["studyUID"],
                "SeriesInstanceUID": params["seriesUID"],
                "SOPInstanceUID": params["objectUID"],
            },
        )
        if not found:
            raise not_found(f"no such instance: {params['objectUID']}")
        loc = found[0]
        content_types = [c.strip() for c in params.get("contentType", "image/jpeg").split(",")]
        if "application/dicom" in content_types:
            wanted = params.get("transferSyntax") or loc.transfer_syntax
            if not transcode.can_transcode(loc.transfer_syntax, wanted):
                raise not_acceptable(f"cannot send {loc.transfer_syntax} as {wanted}")
            data = transcode.transcode(self.archive.read_instance(loc), wanted)
            return Response(data, media_type="application/dicom")
        media_type = next((c for c in content_types if c in rendering.MEDIA_TYPES), None)
        if media_type is None:
            raise not_acceptable(f"contentType {params.get('contentType')} is not supported")
        return self._wado_uri_image(request, loc, media_type)

    def _wado_uri_image(self, request: Request, loc: InstanceLocation, media_type: str) -> Response:
        params = request.query_params
        try:
            window = None
            if params.get("windowCenter") or params.get("windowWidth"):
                window = rendering.parse_window(
                    f"{params.get('windowCenter', '')},{params.get('windowWidth', '')}"
                )
            rows = int_param(request, "rows", 0, maximum=rendering.MAX_SIDE)
            cols = int_param(request, "columns", 0, maximum=rendering.MAX_SIDE)
            viewport = None
            if rows or cols:
                viewport = rendering.Viewport(
                    cols or rendering.MAX_SIDE, rows or rendering.MAX_SIDE
                )
            image, _ = rendering.render(
                full_dataset(self.archive, loc),
                int_param(request, "frameNumber", 1, minimum=1),
                window=window,
                viewport=viewport,
                media_type=media_type,
                quality=int_param(request, "imageQuality", 90, maximum=100, minimum=1),
            )
        except rendering.RenderError as e:
            raise bad_request(str(e)) from None
        except IndexError as e:
            raise not_found(str(e)) from None
        return Response(image, media_type=media_type)
