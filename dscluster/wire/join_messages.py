"""The join protocol's messages (JOIN_PROTOCOL, tags 112-127).

Theory of operation: one stream, four steps, no request ids (the steps are in
order; dscluster/node/join.py runs them):

  joiner -> bootstrap   JoinHello(identity)        an index, a peer ID or "new"
  bootstrap -> joiner   JoinChallenge(nonce)       32 random bytes
  joiner -> bootstrap   JoinProof(mac)             HMAC-SHA256 over the nonce and both
                                                   peer IDs (node/join.py)
  bootstrap -> joiner   JoinConfig(config, clients)  config.json as JSON text, and
                                                     the authorized client peer IDs
                        or JoinError(message)        at any step, then the stream ends

The config travels as JSON text because it is config.json (the joiner writes
it as it is); the codec has no maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from dscluster.wire.schema import MaxLen, Tagged, message

MAX_JOIN_CONFIG = 1024 * 1024  # characters of config.json (the frame limit binds first)


@message(112)
@dataclass(frozen=True, slots=True)
class JoinHello(Tagged):
    identity: str  # its form is checked by the bootstrap (node/join.py check_identity)


@message(113)
@dataclass(frozen=True, slots=True)
class JoinChallenge(Tagged):
    nonce: Annotated[bytes, MaxLen(64)]


@message(114)
@dataclass(frozen=True, slots=True)
class JoinProof(Tagged):
    mac: Annotated[bytes, MaxLen(64)]


@message(115)
@dataclass(frozen=True, slots=True)
class JoinConfig(Tagged):
    config: Annotated[str, MaxLen(MAX_JOIN_CONFIG)]  # config.json, as JSON text
    clients: Annotated[tuple[Annotated[str, MaxLen(128)], ...], MaxLen(65536)] = ()


@message(116)
@dataclass(frozen=True, slots=True)
class JoinError(Tagged):
    message: Annotated[str, MaxLen(4096)]
