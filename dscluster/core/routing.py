"""Request routing: serve here, ASK the migration target, or MOVED to the owner.

Theory of operation
-------------------
For every data request the node decides, as a value, where it is served. The
rules are Redis's (cluster.c getNodeByQuery), for the key's slot at node `me`:

  owner is me, slot not migrating out ........ Serve()
  owner is me, slot MIGRATING to T:
      key exists here ........................ Serve(forward_deletes_to=T)
      key missing here ....................... Ask(T)   (no new key is born here)
  slot IMPORTING from S here, client ASKING ... Serve()
  anything else ............................... Moved(owner)

`Serve.forward_deletes_to` tells the daemon that, while the slot migrates, a
delete of an existing key must first delete the key at the target (the target
may hold a copy from an earlier batch whose acknowledgement was lost) and only
then here; otherwise that stale copy would resurrect the key.

The core knows no data, so the caller says whether the key exists locally and
whether the client sent ASKING. A slot whose owner is not known yet (a node
that has not heard the table) raises UnavailableError: the client retries.
"""

from __future__ import annotations

from dataclasses import dataclass

from dscluster.errors import UnavailableError


@dataclass(frozen=True)
class Serve:
    forward_deletes_to: str | None = None


@dataclass(frozen=True)
class Ask:
    slot: int
    peer: str


@dataclass(frozen=True)
class Moved:
    slot: int
    peer: str


Decision = Serve | Ask | Moved


def decide(me: str, slot: int, owner: str | None, migrating_to: str | None,
           importing_from: str | None, *, exists_locally: bool, asking: bool) -> Decision:
    """The routing rule above, for one request."""
    if owner is None:
        raise UnavailableError(f"slot {slot} has no known owner yet")
    if owner == me:
        if migrating_to is None:
            return Serve()
        return Serve(forward_deletes_to=migrating_to) if exists_locally else Ask(slot, migrating_to)
    if importing_from is not None and asking:
        return Serve()
    return Moved(slot, owner)
