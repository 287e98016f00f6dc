"""The shape of ``results/reliability.json``, shared by the fault, fuzz and CR scenarios.

Every scenario returns one of these records; the tests assert on them and
``bench/reliability.py`` runs them all at full size and writes the merged report. Keeping the
accounting in one place means "lost" is defined once: a request that got neither an answer
(served, possibly by fallback) nor a clear refusal (a 4xx/503 naming why).
"""

from __future__ import annotations

from pydantic import BaseModel, Field, computed_field


class RequestTally(BaseModel):
    """What happened to the requests one fault scenario sent."""

    scenario: str = Field(description="Short name, e.g. 'kill-host-triton'.")
    description: str = Field(default="", description="What the fault was and when it hit.")
    sent: int = Field(default=0, ge=0)
    served: int = Field(default=0, ge=0, description="Answered with outputs (fallback included).")
    served_by_fallback: int = Field(default=0, ge=0)
    refused: int = Field(default=0, ge=0, description="A clear 4xx/503 naming the reason.")
    converged: bool = Field(default=False, description="The system recovered after the fault.")
    notes: dict[str, float | int | str] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def lost(self) -> int:
        """Requests with no answer and no refusal (timeouts, resets, 5xx without a reason)."""
        return self.sent - self.served - self.refused


class FuzzTally(BaseModel):
    """One fuzzing campaign (schemathesis, malformed binary tensors, gRPC messages)."""

    campaign: str
    cases: int = Field(ge=0)
    status_5xx: int = Field(ge=0)
    crashes: int = Field(default=0, ge=0, description="The server died or stopped answering.")
    notes: dict[str, float | int | str] = Field(default_factory=dict)


class CrTally(BaseModel):
    """Invalid custom resources sent to the API server."""

    tried: int = Field(ge=0)
    admitted: int = Field(ge=0)
    without_field_in_message: int = Field(
        default=0, ge=0, description="Refusals whose message did not name the offending field."
    )
    hostile_tried: int = Field(
        default=0, ge=0, description="Hand-written hostile cases (reliability.hostile_crs) sent."
    )
    hostile_admitted: int = Field(default=0, ge=0, description="Hostile cases admitted.")
    hostile_without_reason: int = Field(
        default=0, ge=0, description="Hostile refusals whose message lacked the expected words."
    )


class ReliabilityReport(BaseModel):
    """``results/reliability.json``."""

    scenarios: list[RequestTally] = Field(default_factory=list)
    fuzz: list[FuzzTally] = Field(default_factory=list)
    crs: CrTally | None = None
    meta: dict[str, float | int | str] = Field(
        default_factory=dict, description="When, where and at what size the figures were taken."
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def requests_sent(self) -> int:
        return sum(s.sent for s in self.scenarios)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def requests_lost(self) -> int:
        return sum(s.lost for s in self.scenarios)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fuzz_cases(self) -> int:
        return sum(f.cases for f in self.fuzz)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fuzz_5xx(self) -> int:
        return sum(f.status_5xx for f in self.fuzz)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def invalid_crs_tried(self) -> int:
        return self.crs.tried if self.crs else 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def invalid_crs_admitted(self) -> int:
        return self.crs.admitted if self.crs else 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def hostile_crs_tried(self) -> int:
        return self.crs.hostile_tried if self.crs else 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def hostile_crs_admitted(self) -> int:
        return self.crs.hostile_admitted if self.crs else 0
