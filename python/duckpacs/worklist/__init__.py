"""The Modality Worklist (PS3.4 K) and Modality Performed Procedure Step (PS3.4 F) services
over their own store, ``DATA/worklist.sqlite``; fed by HL7 orders (``duckpacs.hl7``), the CLI
and CSV imports."""
