"""The one exception tree of ds-cluster.

Every error a user or a peer can cause is one of these; the CLIs print them as
a single line and exit non-zero. Code that catches a library's exception
converts it here, at the one place where that library is called, with
``raise X(...) from exc``.
"""

from __future__ import annotations


class DSClusterError(Exception):
    """Base of every error ds-cluster raises on purpose."""


class NotFoundError(DSClusterError, KeyError):
    """The key (or block) does not exist. Distinct from every other failure."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want plain text
        return str(self.args[0]) if self.args else "not found"


class BadKeyError(DSClusterError, ValueError):
    """A key that the datastore or protocol cannot accept."""


class BadRequestError(DSClusterError, ValueError):
    """A well-formed message asking for something invalid (wrong types, bad query)."""


class ConfigError(DSClusterError):
    """A config file or option is missing, malformed or inconsistent."""


class MovedError(DSClusterError):
    """The slot is owned by another node: refresh the table and retry there."""

    def __init__(self, slot: int, peer_id: str, addrs: list[str] | None = None) -> None:
        super().__init__(f"slot {slot} moved to {peer_id}")
        self.slot = slot
        self.peer_id = peer_id
        self.addrs = addrs or []


class AskError(DSClusterError):
    """The slot is migrating and this key is already at the target: ask it once."""

    def __init__(self, slot: int, peer_id: str, addrs: list[str] | None = None) -> None:
        super().__init__(f"slot {slot} is migrating: ask {peer_id}")
        self.slot = slot
        self.peer_id = peer_id
        self.addrs = addrs or []


class UnauthorizedError(DSClusterError, PermissionError):
    """The caller's peer ID or role does not allow this operation."""


class UnavailableError(DSClusterError):
    """A node or the backing store cannot be reached right now (transient)."""


class FencedError(UnavailableError):
    """A copy refused a primary's write: it knows a newer configuration of the slot
    (a higher epoch, or a vote it cast in an election above the primary's epoch)."""


class ProtocolError(DSClusterError):
    """A peer broke the wire protocol (garbage, oversized frame, unknown message)."""


class DatastoreClosedError(DSClusterError):
    """The datastore was used after close()."""


class CorruptBlockError(DSClusterError):
    """A block's bytes do not hash to its CID (or do not decode as its codec says)."""

    def __init__(self, cid: object, reason: str = "bytes do not match the CID's hash") -> None:
        super().__init__(f"corrupt block {cid}: {reason}")
        self.cid = cid
