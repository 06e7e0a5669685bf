"""Getting DICOM into duckpacs: driving an import, film scans.

Inputs are found and progress is reported by :mod:`duckpacs.files`, shared with export.

* :mod:`~duckpacs.ingest.batch`: reads inputs in parallel and hands batches to a sink (the
  store).
* :mod:`~duckpacs.ingest.scans`: a CSV manifest of scanned film to SC / DX / CR instances.
"""
