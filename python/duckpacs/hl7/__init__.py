"""HL7 v2 over MLLP from a RIS or HIS: orders into the worklist and patient updates
(``messages``), and the listener ``duckpacs serve`` starts when ``hl7.port`` is set
(``listener``)."""
