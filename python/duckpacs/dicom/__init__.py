"""DICOM vocabulary shared by every layer: DIMSE status codes (:mod:`.status`), named once here
instead of as numbers in each module; and the one transcoder (:mod:`.transcode`), which DIMSE
and DICOMweb both use."""
