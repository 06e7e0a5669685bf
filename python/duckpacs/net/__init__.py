"""DICOM networking, as Python sees it: the orchestration of the Rust listener and the
rare services (:mod:`.scp`), who may do what (:mod:`.access`), the Storage Commitment
service (:mod:`.commitment`), and associations we open to peers (:mod:`.scu`).

The upper layer and the hot DIMSE services run in Rust (``rust/duckpacs-core/src/net``).
"""
