"""HTTP errors of the web layer: raised anywhere, answered as JSON with the right status."""

from __future__ import annotations


class HttpError(Exception):
    """An error with an HTTP status; the body is ``{"error": message, "status": status}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> HttpError:
    return HttpError(400, message)


def not_found(message: str) -> HttpError:
    return HttpError(404, message)


def not_acceptable(message: str) -> HttpError:
    return HttpError(406, message)
