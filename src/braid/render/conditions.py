"""Status conditions (``metav1.Condition`` semantics) as pure list updates.

``lastTransitionTime`` changes only when a condition's status flips, which is what lets
``kubectl describe`` show *when* something became ready or broke, not when it was last seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def set_condition(
    conditions: Sequence[dict[str, Any]],
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    now: str,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """A new condition list with ``type_`` set; other conditions are kept as they are."""
    status_text = "Unknown" if status is None else ("True" if status else "False")
    previous = next((c for c in conditions if c.get("type") == type_), None)
    transition = (
        previous.get("lastTransitionTime", now)
        if previous is not None and previous.get("status") == status_text
        else now
    )
    updated: dict[str, Any] = {
        "type": type_,
        "status": status_text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        updated["observedGeneration"] = generation
    out = [dict(c) for c in conditions if c.get("type") != type_]
    out.append(updated)
    return sorted(out, key=lambda c: str(c.get("type")))


def condition_status(conditions: Sequence[dict[str, Any]], type_: str) -> str | None:
    """``"True"``, ``"False"``, ``"Unknown"`` or None when the condition is absent."""
    for c in conditions:
        if c.get("type") == type_:
            return str(c.get("status"))
    return None
