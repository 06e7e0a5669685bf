"""The web layer: DICOMweb (PS3.18), WADO-URI and the browser viewer.

- :mod:`~duckpacs.web.app` builds the ASGI application (``create_app``) with authentication,
  audit, CORS and JSON errors; :mod:`duckpacs.server.http` serves it with uvicorn.
- :mod:`~duckpacs.web.reader` is the protocol the layer reads the archive through
  (``ArchiveReader``); :mod:`~duckpacs.web.archive_reader` implements it over the archive
  facade and the store.
- :mod:`~duckpacs.web.dicomweb` (a module per service: QIDO-RS, WADO-RS, STOW-RS, WADO-URI),
  ``multipart`` and ``rendering`` do the DICOMweb work, with DICOM JSON written by the Rust
  core (``_core.dump_json``, ``_core.rows_json``) and transcoding by
  :mod:`duckpacs.dicom.transcode`; ``auth`` and ``audit`` the security; ``static/`` is the
  viewer (plain HTML, CSS and JavaScript).
"""
