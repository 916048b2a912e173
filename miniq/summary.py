"""What one ``miniq process`` run did: the ids of the jobs, by what became of them.

Worker processes (supervisor.py) send theirs to the parent as JSON, which
merges them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Summary:
    """What one ``miniq process`` run did, by job id."""

    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    #: Set aside because their job type was paused or at its cap (pause.py, slots.py).
    held: list[str] = field(default_factory=list)
    #: Follow-up jobs queued (followup.py).
    followups: list[str] = field(default_factory=list)
    wake_at: float | None = None

    def describe(self) -> str:
        """The line ``miniq process`` prints at its end."""
        total = len(self.succeeded) + len(self.failed) + len(self.rejected)
        return (
            f"processed {total} job(s): {len(self.succeeded)} succeeded, {len(self.failed)} failed, "
            f"{len(self.rejected)} rejected, {len(self.retrying)} to retry, {len(self.recovered)} recovered"
        )

    def merge(self, other: dict[str, Any]) -> None:
        for key, value in other.items():
            if isinstance(value, list):
                getattr(self, key).extend(value)
