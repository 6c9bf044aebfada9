"""The HA package's errors."""

from __future__ import annotations

from broadcaster.errors import BroadcasterError

__all__ = ["HaError", "LeaseLost", "NotLeader"]


class HaError(BroadcasterError):
    """Something about the leader lease."""


class LeaseLost(HaError):
    """This instance's lease lapsed (or another instance holds a newer epoch): it must not act."""


class NotLeader(HaError):
    """This instance is a standby; ``leader`` names the instance that acts (``None``: none yet)."""

    def __init__(self, leader: str | None) -> None:
        self.leader = leader
        where = f"leader is {leader}" if leader else "no leader yet"
        super().__init__(f"standby, {where}")
