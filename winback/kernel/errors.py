"""User-facing errors carry a stable code and name what is wrong; everything else is internal."""

from __future__ import annotations

from typing import Any


class WinbackError(Exception):
    """An error a user can act on. `code` is stable; `message` says what is wrong and what to do."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


class InvalidInput(WinbackError):
    code = "invalid_input"
    http_status = 400


class PayloadTooLarge(WinbackError):
    code = "payload_too_large"
    http_status = 413


class Unauthorized(WinbackError):
    code = "unauthorized"
    http_status = 401


class Forbidden(WinbackError):
    code = "forbidden"
    http_status = 403


class NotFound(WinbackError):
    code = "not_found"
    http_status = 404


class ConfigurationError(WinbackError):
    """Settings that cannot work; raised at start-up."""

    code = "configuration_error"
    http_status = 500
