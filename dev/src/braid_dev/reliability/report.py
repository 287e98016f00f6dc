"""The shape of ``results/reliability.json``, shared by the fault, fuzz and CR scenarios.

Every scenario returns one of these records; the tests assert on them and
``bench/reliability.py`` runs them all at full size and writes the merged report. Keeping the
accounting in one place means each kind is defined once (``braid_dev.reliability.load``):
served (outputs, possibly by fallback), refused (a prompt 4xx/503 naming why) and failed
(a deadline, a reset, a 5xx, wrong outputs), counted apart. A *lost* request is any that
failed, or that was sent and never recorded at all.
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
    refused: int = Field(
        default=0, ge=0, description="A prompt 4xx/503 naming the reason (not a deadline)."
    )
    failed: int = Field(
        default=0,
        ge=0,
        description="A deadline (the client's or the gateway's), a reset, a 5xx, wrong outputs.",
    )
    converged: bool = Field(default=False, description="The system recovered after the fault.")
    notes: dict[str, float | int | str] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def unaccounted(self) -> int:
        """Sent but neither served, refused nor failed: should be 0 once the load stopped."""
        return max(0, self.sent - self.served - self.refused - self.failed)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def lost(self) -> int:
        """Every request that failed, and any the load never saw come back."""
        return self.failed + self.unaccounted


class FuzzTally(BaseModel):
    """One fuzzing campaign (schemathesis, malformed binary tensors, gRPC messages)."""

    campaign: str
    cases: int = Field(ge=0)
    status_5xx: int = Field(ge=0)
    crashes: int = Field(default=0, ge=0, description="The server died or stopped answering.")
    good_sent: int = Field(
        default=0,
        ge=0,
        description="Valid requests in flight beside the malformed ones (coalesced with them).",
    )
    good_failed: int = Field(
        default=0, ge=0, description="Valid requests that were not served: each one is a bug."
    )
    rss_growth_mib: float | None = Field(
        default=None, description="The gateway's resident memory after the campaign minus before."
    )
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
    def requests_served(self) -> int:
        return sum(s.served for s in self.scenarios)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def requests_refused(self) -> int:
        return sum(s.refused for s in self.scenarios)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def requests_lost(self) -> int:
        """Requests that failed (a deadline, a reset, a 5xx, wrong outputs)."""
        return sum(s.lost for s in self.scenarios)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fuzz_good_failed(self) -> int:
        """Valid requests sent beside malformed ones that were not served."""
        return sum(f.good_failed for f in self.fuzz)

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
