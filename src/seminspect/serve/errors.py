"""A bad request: an HTTP status, the field at fault and the problem, sent as ``{"error": {...}}``."""

from __future__ import annotations

from typing import Any


class RequestError(Exception):
    """Raised anywhere a request is checked; the app turns it into a 4xx JSON answer."""

    def __init__(self, status: int, field: str | None, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.status = status
        self.field = field
        self.problem = problem

    def body(self) -> dict[str, Any]:
        return error_body(self.field, self.problem)


def error_body(field: str | None, problem: str) -> dict[str, Any]:
    return {"error": {"field": field, "problem": problem}}
