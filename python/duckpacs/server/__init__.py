"""Network services run by ``duckpacs serve``: DIMSE (pynetdicom) and HTTP."""
