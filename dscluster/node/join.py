"""The join protocol: a new node fetches its config from the bootstrap node.

Theory of operation
-------------------
go-ds-cluster's bootstrap node hands any caller the config of identity I,
private key included. Here the caller must first prove it holds the join
secret, without ever sending it (one stream, the messages of
dscluster/wire/join_messages.py in varint frames, read by net/framed.py):

  joiner -> bootstrap   JoinHello("<index or peer id>")
  bootstrap -> joiner   JoinChallenge(<32 random bytes>)
  joiner -> bootstrap   JoinProof(HMAC-SHA256(secret, CONTEXT | nonce |
                          bootstrap peer id | joiner peer id | identity))
  bootstrap -> joiner   JoinConfig(<config.json as JSON text>, [client peer IDs])
                          or JoinError(message)

With identity "new" (``dscluster --join``) the joiner keeps the key it made
itself: the bootstrap node adds the joiner's Noise-authenticated peer ID as a
member with no slots (gossip spreads it) and sends a config whose identity
holds only that peer ID; the joiner fills in its own key. Slots then reach it
by rebalancing (``dsclient cluster rebalance``).

Both peer IDs are the Noise-authenticated ones, so a proof cannot be replayed
to another node, by another caller, or for another identity; the nonce makes
each proof single-use. A wrong proof gets one refusal line in the bootstrap's
log (at most one per peer and kind a minute: RateLimitedLog) and nothing
else. The joiner writes the config (0600) and from then on never needs the
bootstrap again.

Limits, since anyone may open a join stream: the bootstrap reads frames of
at most MAX_JOIN_REQUEST_FRAME bytes (a hello or a proof is well under 1 KiB)
and at most that much per read; the identity in a hello is "new", an index
of at most 5 ASCII digits, or an ASCII alphanumeric peer ID of at most
MAX_IDENTITY_LEN characters, checked before the challenge; and one peer may
have at most MAX_JOIN_STREAMS_PER_PEER join streams open at once (further
ones get an error message and a reset). Whatever is refused gets the error
message, and the node serves everyone else. The config reply can be larger
(every member, every client): the joiner reads it with MAX_JOIN_FRAME.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import trio
from libp2p.abc import INetStream

from dscluster.config import IdentityConfig, NodeConfig, NodeEntry, node_config_json
from dscluster.errors import (
    ConfigError,
    DSClusterError,
    ProtocolError,
    UnauthorizedError,
    UnavailableError,
)
from dscluster.logutil import RateLimitedLog
from dscluster.net.framed import FramedStream, FrameLimits
from dscluster.net.host import HostHandle, Identity, open_host, parse_multiaddr, parse_peer_id
from dscluster.net.streams import reset_stream
from dscluster.wire.framing import encode_frame
from dscluster.wire.join_messages import (
    JoinChallenge,
    JoinConfig,
    JoinError,
    JoinHello,
    JoinProof,
)
from dscluster.wire.messages import JOIN_PROTOCOL
from dscluster.wire.schema import Tagged

log = logging.getLogger(__name__)

CONTEXT = b"dscluster-join/1"
MAX_JOIN_FRAME = 1024 * 1024  # the config reply, as the joiner reads it
MAX_JOIN_REQUEST_FRAME = 4096  # a hello or a proof, as the bootstrap reads it
MAX_JOIN_STREAMS_PER_PEER = 2  # open at once; a retry may overlap a dying stream
MAX_IDENTITY_LEN = 128  # peer IDs are about 52 characters
MAX_INDEX_DIGITS = 5  # a cluster has at most 16384 data nodes
JOIN_TIMEOUT = 10.0
ERROR_LINGER = 1.0  # seconds a refused joiner has to read the error before the reset
NEW_IDENTITY = "new"  # join with the joiner's own key, as a member with no slots

M = TypeVar("M", bound=Tagged)


def check_identity(identity: object) -> str:
    """The hello's identity if it is "new", an index or a peer ID; else ProtocolError.

    Only the form is checked (whether it names one of the cluster's identities
    is told only after a proof of the secret): ``"²"`` is a digit to Python but
    no index, and a 5,000-digit index is no int at all.
    """
    if not isinstance(identity, str):
        raise ProtocolError("hello needs an identity string")
    if identity == NEW_IDENTITY:
        return identity
    if not identity or len(identity) > MAX_IDENTITY_LEN:
        raise ProtocolError(f"hello: an identity of {len(identity)} characters; use an index, "
                            f"a peer ID (at most {MAX_IDENTITY_LEN}) or {NEW_IDENTITY!r}")
    if not (identity.isascii() and identity.isalnum()):
        raise ProtocolError(f"hello: identity {identity!r} is neither an index, a peer ID "
                            f"nor {NEW_IDENTITY!r}")
    if identity.isdigit() and len(identity) > MAX_INDEX_DIGITS:
        raise ProtocolError(f"hello: identity index {identity[:12]}... has more than "
                            f"{MAX_INDEX_DIGITS} digits")
    return identity


def join_proof(secret: str, nonce: bytes, server: str, joiner: str, identity: str) -> bytes:
    msg = b"|".join([CONTEXT, nonce, server.encode(), joiner.encode(), identity.encode()])
    return hmac.new(secret.encode(), msg, hashlib.sha256).digest()


class JoinStream:
    """One join stream: whole messages in (frames up to ``max_frame``), whole messages out."""

    def __init__(self, stream: INetStream, max_frame: int = MAX_JOIN_FRAME) -> None:
        self.stream = stream
        # No frame deadline of its own: every exchange runs under JOIN_TIMEOUT.
        self._fs = FramedStream(stream, FrameLimits(
            max_frame_size=max_frame, read_size=min(max_frame + 16, 65536),
            frame_timeout=JOIN_TIMEOUT, write_timeout=JOIN_TIMEOUT))

    async def send(self, msg: Tagged) -> None:
        # Replies (a config) may be larger than what this side reads.
        await self._fs.send_frame(encode_frame(msg.encode(), MAX_JOIN_FRAME))

    async def receive(self, kind: type[M]) -> M:
        """The next message, which must be a ``kind``; UnauthorizedError for a JoinError."""
        try:
            msg = await self._fs.receive()
        except ProtocolError as exc:
            raise ProtocolError(f"join message: {exc}") from None
        if msg is None:
            raise ProtocolError("join stream ended early")
        if isinstance(msg, JoinError) and kind is not JoinError:
            raise UnauthorizedError(f"bootstrap node refused: {msg.message}")
        if not isinstance(msg, kind):
            raise ProtocolError(f"expected {kind.__name__}, got {type(msg).__name__}")
        return msg


class JoinServer:
    """Serves JOIN_PROTOCOL on the bootstrap node."""

    def __init__(self, config: NodeConfig, secret: str, me: str,
                 live_addrs: Callable[[str], list[str]], clients: Callable[[], list[str]],
                 add_member: Callable[[str], Awaitable[None]] | None = None) -> None:
        self._config = config
        self._add_member = add_member
        self._secret = secret
        self._me = me
        self._live_addrs = live_addrs
        self._clients = clients
        self.refused = 0
        self.served = 0
        self.busy = 0  # streams refused for the per-peer limit
        self._open: dict[str, int] = {}  # join streams open per peer
        self._rlog = RateLimitedLog(log)  # whatever a peer can make us log

    def _config_for(self, identity: str) -> NodeConfig:
        ids = self._config.identity_list
        chosen = None
        if check_identity(identity).isdigit():  # at most MAX_INDEX_DIGITS ASCII digits
            if int(identity) < len(ids):
                chosen = ids[int(identity)]
        else:
            chosen = next((i for i in ids if i.peer_id == identity), None)
        if chosen is None:
            raise UnauthorizedError(f"no identity {identity!r} in this cluster")
        if chosen.peer_id == self._me:
            raise UnauthorizedError(f"identity {identity!r} is the bootstrap node itself")
        nodes = tuple(replace(n, swarm=tuple(self._live_addrs(n.id)) or n.swarm)
                      for n in self._config.nodes)
        entry = next((n for n in nodes if n.id == chosen.peer_id), None)
        if entry is None:
            raise ConfigError(f"identity {identity!r} is not in the node list")
        return replace(self._config, identity=chosen, swarm=self._config_swarm(entry.id),
                       nodes=nodes, bootstrap_node=False, identity_list=(),
                       join_secret_file="")

    def _config_for_new(self, joiner: str) -> NodeConfig:
        if self._add_member is None:
            raise UnauthorizedError("this node does not add new members")
        if any(n.id == joiner for n in self._config.nodes):
            raise UnauthorizedError(f"{joiner} is already a configured member")
        nodes = tuple(replace(n, swarm=tuple(self._live_addrs(n.id)) or n.swarm)
                      for n in self._config.nodes) + (NodeEntry(joiner, ()),)
        # The joiner fills in its own key and listen addresses.
        return replace(self._config, identity=IdentityConfig(joiner, ""), swarm=(), nodes=nodes,
                       bootstrap_node=False, identity_list=(), join_secret_file="")

    def _config_swarm(self, peer: str) -> tuple[str, ...]:
        entry = next(n for n in self._config.nodes if n.id == peer)
        return entry.swarm

    async def handle_stream(self, stream: INetStream) -> None:
        joiner = stream.muxed_conn.peer_id.to_base58()
        open_now = self._open.get(joiner, 0)
        if open_now >= MAX_JOIN_STREAMS_PER_PEER:
            self.refused += 1
            self.busy += 1
            self._rlog.warning("busy", joiner, "join: refused a join stream from %s: %d already "
                               "open (at most %d)", joiner, open_now, MAX_JOIN_STREAMS_PER_PEER)
            with trio.move_on_after(1):
                try:
                    await JoinStream(stream, MAX_JOIN_REQUEST_FRAME).send(JoinError(
                        f"at most {MAX_JOIN_STREAMS_PER_PEER} join streams at once"))
                except Exception as exc:  # the stranger may be gone already
                    log.debug("join: could not tell %s: %r", joiner, exc)
            await reset_stream(stream)
            return
        self._open[joiner] = open_now + 1
        try:
            await self._serve(stream, joiner)
        finally:
            left = self._open[joiner] - 1
            if left:
                self._open[joiner] = left
            else:
                del self._open[joiner]

    async def _serve(self, stream: INetStream, joiner: str) -> None:
        conn = JoinStream(stream, MAX_JOIN_REQUEST_FRAME)
        try:
            with trio.fail_after(JOIN_TIMEOUT):
                hello = await conn.receive(JoinHello)
                identity = check_identity(hello.identity)
                nonce = secrets.token_bytes(32)
                await conn.send(JoinChallenge(nonce))
                proof = (await conn.receive(JoinProof)).mac
                want = join_proof(self._secret, nonce, self._me, joiner, identity)
                if not hmac.compare_digest(proof, want):
                    raise UnauthorizedError("wrong join secret")
                if identity == NEW_IDENTITY:
                    cfg = self._config_for_new(joiner)
                    assert self._add_member is not None
                    await self._add_member(joiner)  # a member before it first dials anyone
                else:
                    cfg = self._config_for(identity)
                await conn.send(JoinConfig(json.dumps(node_config_json(cfg)),
                                           tuple(self._clients())))
                self.served += 1
                log.info("join: handed identity %s (%s) to %s", identity, cfg.identity.peer_id,
                         joiner)
                await stream.close()
                return
        except (UnauthorizedError, ProtocolError, ConfigError) as exc:
            self.refused += 1
            self._rlog.warning("refused", joiner, "join: refused %s: %s", joiner, exc)
            with trio.move_on_after(ERROR_LINGER):
                try:
                    await conn.send(JoinError(str(exc)[:4000]))
                    # A reset makes py-libp2p's yamux drop what the joiner has not read
                    # yet: end our side, give it a moment to read the message and go.
                    await stream.close()
                    while await stream.read(MAX_JOIN_REQUEST_FRAME):
                        pass
                except Exception as send_exc:  # the joiner may be gone already
                    log.debug("join: could not tell %s: %r", joiner, send_exc)
        except trio.TooSlowError:
            self.refused += 1
            self._rlog.warning("timeout", joiner, "join: %s timed out", joiner)
        except Exception as exc:  # the stream broke
            self._rlog.info("failed", joiner, "join: stream from %s failed: %r", joiner, exc)
        await reset_stream(stream)



async def fetch_config(bootstrapper: str, identity: str, secret: str,
                       timeout: float = JOIN_TIMEOUT, *,
                       host_identity: Identity | None = None,
                       swarm_key: bytes | None = None) -> tuple[dict[str, Any], list[str]]:
    """Ask the bootstrap node at ``bootstrapper`` (a /p2p/ multiaddr) for identity's config.

    With identity NEW_IDENTITY, ``host_identity`` is the joiner's own key (the
    one it will run with); ``swarm_key`` that of a private network. Returns (config.json object, authorized client peer IDs). UnauthorizedError
    for a wrong secret or unknown identity, UnavailableError when unreachable.
    """
    parse_multiaddr(bootstrapper)
    if "/p2p/" not in bootstrapper:
        raise ConfigError(f"--bootstrapper {bootstrapper}: needs /p2p/<peer id>")
    server = bootstrapper.rsplit("/p2p/", 1)[1]
    failed: DSClusterError | None = None
    async with open_host(host_identity, swarm_key=swarm_key) as host:
        try:
            reply = await _fetch(host, bootstrapper, server, identity, secret, timeout)
        except DSClusterError as exc:  # raised out here, not in the host's exception group
            failed = exc
    if failed is not None:
        raise failed
    return reply


async def _fetch(host: HostHandle, addr: str, server: str, identity: str, secret: str,
                 timeout: float) -> tuple[dict[str, Any], list[str]]:
    await host.connect(server, [addr], timeout=timeout)
    try:
        with trio.fail_after(timeout):
            stream = await host.host.new_stream(parse_peer_id(server),
                                                [JOIN_PROTOCOL])  # type: ignore[list-item]
            conn = JoinStream(stream)
            await conn.send(JoinHello(identity))
            nonce = (await conn.receive(JoinChallenge)).nonce
            if len(nonce) < 16:
                raise ProtocolError("bad join challenge")
            mac = join_proof(secret, nonce, server, host.peer_id.to_base58(), identity)
            await conn.send(JoinProof(mac))
            reply = await conn.receive(JoinConfig)
    except trio.TooSlowError as exc:
        raise UnavailableError(f"join with {server} timed out") from exc
    except (UnauthorizedError, ProtocolError):
        raise
    except Exception as exc:  # stream errors from py-libp2p
        raise UnavailableError(f"join with {server} failed: {exc!r}") from exc
    try:
        config = json.loads(reply.config)
    except ValueError as exc:
        raise ProtocolError(f"bad join reply: config is not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ProtocolError("bad join reply: config is not a JSON object")
    return config, list(reply.clients)

