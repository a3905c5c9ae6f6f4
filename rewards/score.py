"""What every reward component returns: a value and, when it is not full, the reason.

`failed` marks a score that could not be computed (a verifier that never answered): its value
is 0 so the total stays defined, and the pool counts it in metrics instead of hiding it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Score:
    value: float
    reason: str | None = None
    failed: bool = False

    @classmethod
    def ok(cls, value: float = 1.0) -> Score:
        return cls(value)

    @classmethod
    def zero(cls, reason: str) -> Score:
        return cls(0.0, reason)

    @classmethod
    def fail(cls, reason: str) -> Score:
        return cls(0.0, reason, failed=True)
