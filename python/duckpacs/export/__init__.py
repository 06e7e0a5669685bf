"""Getting DICOM out of duckpacs: media with a DICOMDIR, de-identification.

* :mod:`~duckpacs.export.dicomdir`: STD-GEN-CD media (PS3.10 8, PS3.11 D) via pydicom's
  FileSet, files kept byte for byte.
* :mod:`~duckpacs.export.anonymize`: the PS3.15 Annex E Basic Profile with consistent UIDs.

Inputs are found, read and written with :mod:`duckpacs.files`, shared with ingest.
"""
