"""API errors: every 4xx carries a JSON body {code, message}."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad_request(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)
