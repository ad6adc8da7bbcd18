"""One check's verdict and the report of them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Check", "DoctorReport", "Status"]


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Check:
    """``detail`` says what was found; ``action`` what to do about it (empty when ok)."""

    name: str
    status: Status
    detail: str
    action: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail,
                "action": self.action}


@dataclass(slots=True)
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        """Nothing is an error: safe to run (warnings are worth reading, not blocking)."""
        return all(c.status is not Status.ERROR for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.safe else 1

    def get(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        counts = {s.value: sum(c.status is s for c in self.checks) for s in Status}
        return {"ok": self.safe, "exit_code": self.exit_code, "counts": counts,
                "checks": [c.as_dict() for c in self.checks]}
