"""DICOM vocabulary shared by every layer: DIMSE status codes (:mod:`.status`) and query
levels (:mod:`.levels`). Named once here instead of as numbers and strings in each module."""
