"""Getting DICOM into duckpacs: finding inputs, driving an import, progress, film scans.

* :mod:`~duckpacs.ingest.sources`: DICOM inputs in folders, files, zips, gzip, DICOMDIR media.
* :mod:`~duckpacs.ingest.batch`: reads inputs in parallel and hands batches to a sink (the
  store).
* :mod:`~duckpacs.ingest.progress`: terminal status line, summary, JSON report.
* :mod:`~duckpacs.ingest.scans`: a CSV manifest of scanned film to SC / DX / CR instances.
"""
