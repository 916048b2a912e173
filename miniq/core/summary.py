"""What one ``miniq process`` run did: the ids of the jobs, by what became of them.

Worker processes (supervisor.py) send theirs to the parent as JSON, which
merges them.
"""

from __future__ import annotations

from typing import Any


class Summary:
    """What one ``miniq process`` run did, by job id."""

    __slots__ = ("failed", "followups", "held", "lost", "recovered", "rejected", "retrying", "succeeded", "wake_at")

    def __init__(self) -> None:
        self.succeeded: list[str] = []
        self.failed: list[str] = []
        self.rejected: list[str] = []
        self.recovered: list[str] = []
        self.retrying: list[str] = []
        self.lost: list[str] = []
        #: Set aside because their job type was paused or at its cap (pause.py, slots.py).
        self.held: list[str] = []
        #: Follow-up jobs queued (followup.py).
        self.followups: list[str] = []
        self.wake_at: float | None = None

    def __repr__(self) -> str:
        return f"Summary({self.to_json()})"

    def to_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.__slots__}

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
