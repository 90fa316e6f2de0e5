"""A libp2p host for ds-cluster: identity, Noise + yamux, one connection per peer.

Theory of operation: every node and client is one py-libp2p host. It is
built here and nowhere else, so that every choice about py-libp2p lives in
one place (see doc/protocol.md, "py-libp2p notes"):

- security is Noise only: py-libp2p's default also offers secio and
  *plaintext*, under which a peer could claim any peer ID; the RPC layer's
  authorization relies on the remote peer ID being authenticated;
- the stream muxer is yamux only (mplex frames writes at 4 KiB and shares one
  lock between reading and writing);
- an optional private network (pnet.py): a swarm key encrypts every raw
  connection, go-libp2p-compatibly, so strangers cannot even connect;
- at most one connection per peer, which makes ``connect()`` return as soon as
  the connection is up instead of after a fixed 250 ms dial delay.

Identities are libp2p protobuf-serialized private keys, as go-ds-cluster
stores them in config.json (``identity.sk``, base64 as Go writes ``[]byte``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair, KeyType, PrivateKey
from libp2p.crypto.pb import crypto_pb2
from libp2p.crypto.secp256k1 import Secp256k1PrivateKey
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from dscluster.errors import ConfigError, UnavailableError
from dscluster.net import libp2p_fixes, pnet
from dscluster.net.admission import admission_of

log = logging.getLogger(__name__)

# py-libp2p's yamux sends a WINDOW_UPDATE frame after every read
# (PY_YAMUX_RELEASE_ON_READ, on by default; read at call time): one extra encrypted
# frame per 4 KiB request. Off, it sends one per two such reads: 12-13 % less CPU
# per sequential 4 KiB request, measured (doc/protocol.md, py-libp2p note 12).
os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")

LOOPBACK_ANY_PORT = "/ip4/127.0.0.1/tcp/0"
CONNECT_TIMEOUT = 10.0
_KEY_TYPE_NAMES = {0: "RSA", 1: "Ed25519", 2: "Secp256k1", 3: "ECDSA"}


@dataclass(frozen=True)
class Identity:
    """A node's or client's private key and the peer ID derived from it."""

    key_pair: KeyPair

    @property
    def peer_id(self) -> ID:
        return ID.from_pubkey(self.key_pair.public_key)

    @property
    def peer_id_str(self) -> str:
        return self.peer_id.to_base58()

    @classmethod
    def generate(cls) -> Identity:
        key = Ed25519PrivateKey.new()
        return cls(KeyPair(key, key.get_public_key()))

    # -- libp2p protobuf form (crypto.MarshalPrivateKey in Go) ---------------

    def to_bytes(self) -> bytes:
        key = self.key_pair.private_key
        data = key.to_bytes()
        if key.get_type() == KeyType.Ed25519:
            # Go stores an Ed25519 private key as seed || public key (64 bytes)
            # and refuses the bare 32-byte seed py-libp2p writes.
            data = data + self.key_pair.public_key.to_bytes()
        msg = crypto_pb2.PrivateKey(key_type=key.get_type().value, data=data)
        return msg.SerializeToString()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Identity:
        msg = crypto_pb2.PrivateKey()
        try:
            msg.ParseFromString(raw)
        except Exception as exc:  # protobuf raises its own DecodeError
            raise ConfigError(f"identity key is not a libp2p private key: {exc}") from exc
        key: PrivateKey
        try:
            if msg.key_type == KeyType.Ed25519.value:
                # Go writes seed || public (64 bytes), older Go 96; py-libp2p 32.
                if len(msg.data) not in (32, 64, 96):
                    raise ValueError(f"Ed25519 key of {len(msg.data)} bytes")
                key = Ed25519PrivateKey.from_bytes(msg.data[:32])
                if len(msg.data) >= 64 and msg.data[32:64] != key.get_public_key().to_bytes():
                    raise ValueError("Ed25519 public half does not match the seed")
            elif msg.key_type == KeyType.Secp256k1.value:
                key = Secp256k1PrivateKey.from_bytes(msg.data)
            else:
                name = _KEY_TYPE_NAMES.get(msg.key_type, str(msg.key_type))
                raise ValueError(
                    f"key type {name} is not supported (py-libp2p 0.8.1 loads Ed25519 and "
                    "Secp256k1; regenerate the config with dscfg)"
                )
        except Exception as exc:  # the key libraries raise assorted types
            raise ConfigError(f"bad identity key: {exc}") from exc
        return cls(KeyPair(key, key.get_public_key()))

    def to_base64(self) -> str:
        return base64.b64encode(self.to_bytes()).decode("ascii")

    @classmethod
    def from_base64(cls, text: str) -> Identity:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"identity key is not base64: {exc}") from exc
        return cls.from_bytes(raw)


def parse_peer_id(text: str) -> ID:
    """A peer ID from its base58 string, or ConfigError.

    py-libp2p accepts any base58 text as a peer ID; we also check that the bytes
    are an identity or sha2-256 multihash of the right length, as peer IDs are.
    """
    try:
        pid = ID.from_base58(text)
    except Exception as exc:
        raise ConfigError(f"bad peer ID {text!r}: {exc}") from exc
    raw = pid.to_bytes()
    ok = len(raw) >= 2 and (
        (raw[0] == 0x12 and raw[1] == 32 and len(raw) == 34)
        or (raw[0] == 0x00 and raw[1] == len(raw) - 2 and raw[1] <= 42)
    )
    if not ok:
        raise ConfigError(f"bad peer ID {text!r}: not a multihash of a public key")
    return pid


def parse_multiaddr(text: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(text)
    except Exception as exc:
        raise ConfigError(f"bad multiaddr {text!r}: {exc}") from exc


def peer_info_from_addrs(peer_id: str | ID, addrs: Sequence[str]) -> PeerInfo:
    """PeerInfo for dialing; addrs may carry a /p2p/ suffix or not."""
    pid = peer_id if isinstance(peer_id, ID) else parse_peer_id(peer_id)
    bare = []
    for text in addrs:
        bare.append(parse_multiaddr(text.split("/p2p/")[0]))
    return PeerInfo(pid, bare)


def _build_host(identity: Identity, swarm_key: bytes | None) -> IHost:
    libp2p_fixes.install()
    if swarm_key is not None:
        pnet.install()
    noise = NoiseTransport(identity.key_pair, noise_privkey=new_x25519_key_pair().private_key)
    host = new_host(
        key_pair=identity.key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},  # type: ignore[dict-item]
        # min_connections=0: py-libp2p's auto-connector otherwise polls every 10 s
        # to dial peerstore peers until it holds 50 connections.
        connection_config=ConnectionConfig(max_connections_per_peer=1, min_connections=0),
        psk=swarm_key.hex() if swarm_key is not None else None,
    )
    admission_of(host)  # guards new streams from the start (everyone trusted until set_trust)
    return host


async def prepare_dial(host: IHost, peer: ID) -> None:
    """Make the next dial to ``peer`` really try (py-libp2p notes 6 and 7).

    py-libp2p keeps a closed connection in its table for a while; meanwhile
    ``connect()`` returns at once ("already connected") and ``new_stream()``
    fails with "No valid connections" instead of dialing again: drop the
    peer's connections when all of them are closed. And after one failed dial
    it refuses to dial the peer for 60 s (its negative cache), which would
    hide a restarted node: callers here have their own deadlines, so clear it.
    """
    network = host.get_network()
    if isinstance(network, Swarm):
        network.unblock_peer(peer)
    conns = network.get_connections(peer)
    if conns and all(conn.is_closed for conn in conns):
        log.debug("forgetting closed connections to %s", peer)
        await host.disconnect(peer)


@dataclass(frozen=True)
class HostHandle:
    """A running host: its libp2p object and where peers can reach it."""

    host: IHost
    identity: Identity

    @property
    def peer_id(self) -> ID:
        return self.host.get_id()

    @property
    def addrs(self) -> list[str]:
        """Full multiaddrs ending in /p2p/<peer id>, with the real bound ports."""
        pid = self.peer_id.to_base58()
        out = []
        for ma in self.host.get_addrs():
            text = str(ma)
            out.append(text if "/p2p/" in text else f"{text}/p2p/{pid}")
        return out

    @property
    def listen_addrs(self) -> list[str]:
        """The bound transport addrs without the /p2p/ part."""
        return [a.split("/p2p/")[0] for a in self.addrs]

    async def connect(
        self, peer_id: str | ID, addrs: Sequence[str], timeout: float = CONNECT_TIMEOUT
    ) -> None:
        """Dial a peer (no-op when already connected); UnavailableError on failure."""
        info = peer_info_from_addrs(peer_id, addrs)
        try:
            with trio.fail_after(timeout):
                await prepare_dial(self.host, info.peer_id)
                await self.host.connect(info)
        except trio.TooSlowError as exc:
            raise UnavailableError(f"connect to {info.peer_id} timed out") from exc
        except Exception as exc:  # py-libp2p raises assorted types; Cancelled is not one
            raise UnavailableError(f"cannot connect to {info.peer_id}: {exc}") from exc


@asynccontextmanager
async def open_host(
    identity: Identity | None = None, listen_addrs: Sequence[str] = (LOOPBACK_ANY_PORT,),
    *, swarm_key: bytes | None = None,
) -> AsyncIterator[HostHandle]:
    """Run a host listening on ``listen_addrs`` for the body of the ``async with``.

    With ``swarm_key`` (32 bytes, see pnet.py) the host is in that private
    network: it connects only to peers holding the same key.
    """
    identity = identity or Identity.generate()
    addrs = [parse_multiaddr(a) for a in listen_addrs]
    host = _build_host(identity, swarm_key)
    refusal: str | None = None
    async with AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(host.run(listen_addrs=addrs))
        except OSError as exc:
            await _close_host(host)
            raise UnavailableError(f"cannot listen on {list(listen_addrs)}: {exc}") from exc
        # Close before host.run() exits: leaving run() first stops the swarm's tasks and
        # forgets its connections without closing their sockets, and close() then finds
        # none, so each closed host left its connections open until garbage collection.
        stack.push_async_callback(_close_host, host)
        if len(host.get_network().listeners) < len(addrs):
            # py-libp2p logs a failed listen and runs on without it.
            refusal = f"cannot listen on {', '.join(listen_addrs)}: {_why_not_bindable(addrs)}"
        else:
            handle = HostHandle(host, identity)
            log.debug("host %s listening on %s", handle.peer_id, handle.addrs)
            yield handle
    if refusal is not None:  # raised out here, not from inside run()'s nursery
        raise UnavailableError(refusal)


def _why_not_bindable(addrs: Sequence[multiaddr.Multiaddr]) -> str:
    """Why the first of ``addrs`` cannot be bound, by trying it as py-libp2p would."""
    for ma in addrs:
        try:
            ip = ma.value_for_protocol("ip4") or ma.value_for_protocol("ip6")
            port = int(ma.value_for_protocol("tcp"))
        except Exception:  # not an IP/TCP address: py-libp2p has no transport for it
            return f"no transport for {ma}"
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((ip, port))
            except OSError as exc:
                return f"{exc.strerror or exc} (is another node running on it?)"
    return "the listener did not start (see the log)"


async def _close_host(host: IHost) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(5):
        await host.close()
