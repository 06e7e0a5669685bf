"""DIMSE status codes (PS3.7 Annex C), named once.

Service-specific meanings: C-STORE PS3.4 B.2.3, C-FIND C.4.1.1.4, C-MOVE C.4.2.1.5, C-GET
C.4.3.1.4, Storage Commitment J.3.
"""

from __future__ import annotations

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # C-FIND: optional keys not supported (PS3.4 C.4.1.1.4)
CANCEL = 0xFE00

# Warnings
WARNING = 0xB000  # C-GET/C-MOVE: some sub-operations failed
COERCION_OF_DATA_ELEMENTS = 0xB000  # C-STORE (PS3.4 B.2.3)
ELEMENTS_DISCARDED = 0xB006  # C-STORE: we answer it for a kept-first conflict
DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007

# Failures
OUT_OF_RESOURCES = 0xA700
OUT_OF_RESOURCES_MATCHES = 0xA701  # C-MOVE/C-GET: unable to calculate number of matches
OUT_OF_RESOURCES_SUBOPERATIONS = 0xA702  # C-MOVE/C-GET: unable to perform sub-operations
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
NO_SUCH_SOP_CLASS = 0x0118
NO_SUCH_OBJECT_INSTANCE = 0x0112  # also Storage Commitment's failure reason
SOP_CLASS_NOT_SUPPORTED = 0x0122
NOT_AUTHORIZED = 0x0124
DUPLICATE_INVOCATION = 0x0210
UNRECOGNIZED_OPERATION = 0x0211
MISTYPED_ARGUMENT = 0x0212


def is_pending(status: int) -> bool:
    return status in (PENDING, PENDING_WARNING)


def is_warning(status: int) -> bool:
    return status in (WARNING, ELEMENTS_DISCARDED, DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING)


def is_failure(status: int) -> bool:
    return not (status in (SUCCESS, CANCEL) or is_pending(status) or is_warning(status))
