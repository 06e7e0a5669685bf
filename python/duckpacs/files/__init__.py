"""DICOM files outside the archive, as both ingest and export meet them.

* :mod:`~duckpacs.files.sources`: DICOM inputs found by content in folders, files, zips,
  gzip and DICOMDIR media (what ``import``, ``anonymize`` and ``dicomdir`` read).
* :mod:`~duckpacs.files.part10`: quiet pydicom parsing and Part 10 encoding (what the file
  tools write, and film scans build).
* :mod:`~duckpacs.files.progress`: terminal status line, summary and JSON report of work
  over many files, with the inputs rejected and why.

Below :mod:`duckpacs.ingest` and :mod:`duckpacs.export`, so that neither imports the other.
"""
