"""Private networks: a pre-shared key that strangers cannot get past.

Theory of operation
-------------------
With a swarm key, every raw TCP connection is encrypted before anything
else (even multistream-select) crosses it, exactly as go-libp2p's pnet does:
each side sends 24 random bytes, a nonce, then XORs everything it writes with
the XSalsa20 key stream of (key, its nonce), and decrypts what it reads with
the peer's. A peer without the key sees noise and its Noise handshake fails,
so it never completes a connection; the key only gates who may connect, the
Noise layer above still authenticates the peer ID.

The key file is Kubo's and go-libp2p's ``swarm.key``::

    /key/swarm/psk/1.0.0/
    /base16/
    <64 hex digits>

py-libp2p 0.8.1 ships a pnet (libp2p/security/pnet/psk_conn.py) that is not
go-libp2p's: it sends an 8-byte nonce and uses plain Salsa20, and reads the
nonce with one ``read(8)`` that a short TCP read breaks. Its swarm calls the
module-level ``new_protected_conn`` on every dialed and accepted connection
when a ``psk`` is set; `install` points that name at `PnetConn` below
(XSalsa20, 24-byte nonce, nonce read exactly), once, from net/host.py.
XSalsa20 is HSalsa20 (written here, a few dozen operations per connection)
then PyCryptodome's Salsa20 with the nonce's last 8 bytes.
"""

from __future__ import annotations

import logging
import os
import struct

from Crypto.Cipher import Salsa20
from libp2p.abc import ConnectionType, IRawConnection
from libp2p.network.connection.raw_connection import RawConnection
from multiaddr import Multiaddr

from dscluster.errors import ConfigError

log = logging.getLogger(__name__)

SWARM_KEY_FILE = "swarm.key"
_HEADER = ("/key/swarm/psk/1.0.0/", "/base16/")
NONCE_SIZE = 24


# -- the swarm.key file --------------------------------------------------------------

def new_swarm_key() -> bytes:
    return os.urandom(32)


def format_swarm_key(key: bytes) -> str:
    return f"{_HEADER[0]}\n{_HEADER[1]}\n{key.hex()}\n"


def parse_swarm_key(text: str) -> bytes:
    """The 32-byte key of a swarm.key text; ConfigError naming what is wrong."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) != 3 or lines[0] != _HEADER[0]:
        raise ConfigError(f"swarm key: expected '{_HEADER[0]}', '{_HEADER[1]}' and a key line")
    if lines[1] != _HEADER[1]:
        raise ConfigError(f"swarm key: unsupported encoding {lines[1]!r} (use {_HEADER[1]})")
    try:
        key = bytes.fromhex(lines[2])
    except ValueError:
        raise ConfigError("swarm key: the key line is not hex") from None
    if len(key) != 32:
        raise ConfigError(f"swarm key: {len(key)} bytes, need 32")
    return key


def load_swarm_key(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, encoding="ascii") as f:
            return parse_swarm_key(f.read(4096))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{os.fspath(path)}: cannot read the swarm key: {exc}") from None


def swarm_key_of(conf_dir: str | os.PathLike[str]) -> bytes | None:
    """DIR/swarm.key's key if the file exists (the node or client is in a private network)."""
    path = os.path.join(conf_dir, SWARM_KEY_FILE)
    if not os.path.exists(path):
        return None
    key = load_swarm_key(path)
    log.info("private network: using %s", path)
    return key


# -- XSalsa20 ----------------------------------------------------------------------

_SIGMA = struct.unpack("<4I", b"expand 32-byte k")
_M = 0xFFFFFFFF


def _rotl(v: int, c: int) -> int:
    return ((v << c) & _M) | (v >> (32 - c))


def hsalsa20(key: bytes, nonce16: bytes) -> bytes:
    """The XSalsa20 subkey of (key, first 16 nonce bytes)."""
    k = struct.unpack("<8I", key)
    n = struct.unpack("<4I", nonce16)
    x = [_SIGMA[0], *k[:4], _SIGMA[1], *n, _SIGMA[2], *k[4:], _SIGMA[3]]
    for _ in range(10):  # 20 rounds: column round then row round
        for a, b, c, d in ((0, 4, 8, 12), (5, 9, 13, 1), (10, 14, 2, 6), (15, 3, 7, 11),
                           (0, 1, 2, 3), (5, 6, 7, 4), (10, 11, 8, 9), (15, 12, 13, 14)):
            x[b] ^= _rotl((x[a] + x[d]) & _M, 7)
            x[c] ^= _rotl((x[b] + x[a]) & _M, 9)
            x[d] ^= _rotl((x[c] + x[b]) & _M, 13)
            x[a] ^= _rotl((x[d] + x[c]) & _M, 18)
    return struct.pack("<8I", x[0], x[5], x[10], x[15], x[6], x[7], x[8], x[9])


def xsalsa20(key: bytes, nonce: bytes) -> Salsa20.Salsa20Cipher:
    """A stream cipher object: XSalsa20 of a 32-byte key and a 24-byte nonce."""
    return Salsa20.new(key=hsalsa20(key, nonce[:16]), nonce=nonce[16:])


# -- the protected connection ---------------------------------------------------------

class PnetConn(RawConnection):
    """A raw connection encrypted with the swarm key (go-libp2p pnet framing)."""

    def __init__(self, conn: IRawConnection, key: bytes) -> None:
        # Not RawConnection.__init__: this wraps a connection, it has no stream.
        self._conn = conn
        self._key = key
        self.is_initiator = conn.is_initiator
        self._writer: Salsa20.Salsa20Cipher | None = None
        self._reader: Salsa20.Salsa20Cipher | None = None

    async def write(self, data: bytes) -> None:
        if self._writer is None:
            nonce = os.urandom(NONCE_SIZE)
            self._writer = xsalsa20(self._key, nonce)
            await self._conn.write(nonce + self._writer.encrypt(data))
            return
        await self._conn.write(self._writer.encrypt(data))

    async def read(self, n: int | None = None) -> bytes:
        if self._reader is None:
            nonce = b""
            while len(nonce) < NONCE_SIZE:  # TCP may hand the nonce over in pieces
                part = await self._conn.read(NONCE_SIZE - len(nonce))
                if not part:
                    return b""
                nonce += part
            self._reader = xsalsa20(self._key, nonce)
        data = await self._conn.read(n)
        return self._reader.decrypt(data) if data else b""

    async def close(self) -> None:
        await self._conn.close()

    def get_remote_address(self) -> tuple[str, int] | None:
        return self._conn.get_remote_address()

    def get_transport_addresses(self) -> list[Multiaddr]:
        return self._conn.get_transport_addresses()

    def get_connection_type(self) -> ConnectionType:
        return self._conn.get_connection_type()


def _protect(conn: IRawConnection, psk: str) -> PnetConn:
    return PnetConn(conn, bytes.fromhex(psk))


_installed = False


def install() -> None:
    """Make py-libp2p's swarm wrap connections in PnetConn when it has a psk."""
    global _installed
    if _installed:
        return
    import libp2p.network.swarm as swarm_module

    swarm_module.new_protected_conn = _protect  # type: ignore[assignment]
    _installed = True
    log.debug("pnet: py-libp2p's swarm now uses XSalsa20 (go-libp2p compatible)")
