"""DICOMweb routes (PS3.18), one module per service over the same archive.

- :mod:`.qido`: QIDO-RS search (10.6);
- :mod:`.wado`: WADO-RS instances, frames and bulk data (10.4);
- :mod:`.metadata`: WADO-RS metadata, DICOM JSON cached per instance (10.4.1.1.2);
- :mod:`.rendered`: WADO-RS rendered and thumbnail images (10.4.1.1.3-4);
- :mod:`.stow`: STOW-RS store (10.5);
- :mod:`.wado_uri`: WADO-URI (9);
- :mod:`.common`: request parameters, DICOM JSON negotiation, resource paths to instances.

Everything reads the archive through the :class:`~duckpacs.web.reader.ArchiveReader`
protocol. Errors are raised as :class:`~duckpacs.web.errors.HttpError` and turned into JSON
bodies (with CORS headers) by the application.
"""

from __future__ import annotations

from pathlib import Path

from starlette.routing import Route

from duckpacs.web.dicomweb.metadata import Metadata
from duckpacs.web.dicomweb.qido import Qido
from duckpacs.web.dicomweb.rendered import Rendered
from duckpacs.web.dicomweb.stow import Stow
from duckpacs.web.dicomweb.wado import Wado
from duckpacs.web.dicomweb.wado_uri import WadoUri
from duckpacs.web.reader import ArchiveReader


class DicomWeb:
    """The DICOMweb services over one archive, below ``prefix``."""

    def __init__(
        self,
        archive: ArchiveReader,
        prefix: str = "/dicom-web",
        cache_bytes: int = 64 << 20,
        spool_dir: Path | None = None,
    ) -> None:
        self.services = (
            Qido(archive, prefix),
            Wado(archive, prefix),
            Metadata(archive, prefix, cache_bytes),
            Rendered(archive, prefix),
            WadoUri(archive, prefix),
            Stow(archive, prefix, spool_dir),
        )

    def routes(self) -> list[Route]:
        return [route for service in self.services for route in service.routes()]
