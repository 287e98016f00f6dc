"""How a reconciler fails: a spec that cannot work (Ready=False, not retried) or something it
refers to that is missing (retried later). Each carries a CamelCase reason for conditions."""

from __future__ import annotations


class SpecError(ValueError):
    """The spec cannot work as written: reported as Ready=False, not retried."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DependencyMissingError(RuntimeError):
    """Something the resource refers to does not exist (yet): retried later."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
