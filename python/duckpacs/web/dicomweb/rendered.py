"""Rendered and thumbnail resources of WADO-RS (PS3.18 10.4.1.1.3, 10.4.1.1.4): an image for
people, JPEG or PNG, made by :mod:`duckpacs.web.rendering`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from duckpacs.web import multipart, rendering
from duckpacs.web.auth import require
from duckpacs.web.dicomweb.common import (
    INSTANCE,
    SERIES,
    STUDY,
    Service,
    frame_list,
    get_routes,
    int_param,
    locate,
    media_ranges,
)
from duckpacs.web.errors import bad_request, not_acceptable


class Rendered(Service):
    """The rendered and thumbnail resources over one archive."""

    def routes(self) -> list[Route]:
        s, r, i = STUDY, SERIES, INSTANCE
        return get_routes(
            self.prefix,
            [
                (s + "/rendered", self.rendered),
                (s + r + "/rendered", self.rendered),
                (s + r + i + "/rendered", self.rendered),
                (s + r + i + "/frames/{frames}/rendered", self.rendered),
                (s + "/thumbnail", self.thumbnail),
                (s + r + "/thumbnail", self.thumbnail),
                (s + r + i + "/thumbnail", self.thumbnail),
                (s + r + i + "/frames/{frames}/thumbnail", self.thumbnail),
            ],
        )

    def rendered(self, request: Request) -> Response:
        """Instance and frame level render that image; study and series level render their
        representative (middle) instance, as dicomweb-client and OHIF expect one image."""
        return self._render(request, thumbnail=False)

    def thumbnail(self, request: Request) -> Response:
        return self._render(request, thumbnail=True)

    def _render(self, request: Request, thumbnail: bool) -> Response:
        require(request, "read")
        media_type = _image_type(media_ranges(request))
        _, found = locate(self.archive, request)
        loc = found[len(found) // 2] if "instance" not in request.path_params else found[0]
        frame = 1
        if "frames" in request.path_params:
            numbers = frame_list(request.path_params["frames"], loc.number_of_frames)
            if len(numbers) != 1:
                raise bad_request("render one frame at a time")
            frame = numbers[0]
        params = request.query_params
        try:
            window = rendering.parse_window(params.get("window"))
            viewport = rendering.parse_viewport(
                params.get("viewport") or ("128,128" if thumbnail else None)
            )
            quality = int_param(request, "quality", 90, maximum=100, minimum=1)
            ds, frame = self.archive.frame_dataset(loc, frame)
            image, used = rendering.render(
                ds,
                frame,
                window=window,
                viewport=viewport,
                media_type=media_type,
                quality=quality,
            )
        except rendering.RenderError as e:
            raise bad_request(str(e)) from None
        headers = {"Cache-Control": "private"}
        if used is not None:
            headers["X-VOI-Window"] = f"{used.center:g},{used.width:g},{used.function}"
        return Response(image, media_type=media_type, headers=headers)


def _image_type(ranges: list[multipart.MediaRange]) -> str:
    for r in ranges:
        for media_type in rendering.MEDIA_TYPES:
            if r.matches(media_type):
                return media_type
    raise not_acceptable("rendered images are image/jpeg or image/png")
