"""The libp2p host: identities in Go's format, real hosts on 127.0.0.1."""

from __future__ import annotations

import base64

import pytest
import trio

from dscluster.errors import ConfigError, UnavailableError
from dscluster.net.host import Identity, open_host, parse_peer_id

# libp2p specs, peer-ids.md test vectors (what go-libp2p's MarshalPrivateKey writes).
ED25519_PRIVATE = bytes.fromhex(
    "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d"
    "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
ED25519_PUBLIC = bytes.fromhex(
    "080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
SECP256K1_PRIVATE = bytes.fromhex(
    "0802122053DADF1D5A164D6B4ACDB15E24AA4C5B1D3461BDBD42ABEDB0A4404D56CED8FB"
)
SECP256K1_PUBLIC = bytes.fromhex(
    "08021221037777e994e452c21604f91de093ce415f5432f701dd8cd1a7a6fea0e630bfca99"
)


def test_go_ed25519_key_loads_and_round_trips_byte_for_byte():
    ident = Identity.from_bytes(ED25519_PRIVATE)
    assert ident.key_pair.public_key.serialize() == ED25519_PUBLIC
    assert ident.to_bytes() == ED25519_PRIVATE
    # Small keys are inlined: the peer ID is the identity multihash of the public key.
    assert parse_peer_id(ident.peer_id_str).to_bytes() == bytes([0, 36]) + ED25519_PUBLIC
    assert ident.peer_id_str.startswith("12D3KooW")


def test_secp256k1_key_loads():
    ident = Identity.from_bytes(SECP256K1_PRIVATE)
    assert ident.key_pair.public_key.serialize() == SECP256K1_PUBLIC
    assert Identity.from_bytes(ident.to_bytes()).peer_id == ident.peer_id


def test_generated_identity_round_trips_through_base64():
    ident = Identity.generate()
    text = ident.to_base64()
    assert base64.b64decode(text)[:3] == b"\x08\x01\x12"  # Ed25519, data field follows
    again = Identity.from_base64(text)
    assert again.peer_id == ident.peer_id
    assert again.to_bytes() == ident.to_bytes()


def test_ecdsa_key_gives_clear_config_error():
    # go-ds-cluster generates ECDSA keys; py-libp2p 0.8.1 cannot load them.
    raw = bytes([0x08, 0x03, 0x12, 0x02, 0x30, 0x00])
    with pytest.raises(ConfigError, match="ECDSA"):
        Identity.from_bytes(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage\xff\xff",
        bytes([0x08, 0x01, 0x12, 0x05]) + b"short",  # Ed25519 of 5 bytes
        ED25519_PRIVATE[:-1] + bytes([ED25519_PRIVATE[-1] ^ 1]),  # public half mismatch
        b"",
    ],
)
def test_bad_keys_raise_config_error(raw):
    with pytest.raises(ConfigError):
        Identity.from_bytes(raw)


def test_bad_base64_and_peer_id_raise_config_error():
    with pytest.raises(ConfigError):
        Identity.from_base64("not base64!!")
    with pytest.raises(ConfigError):
        parse_peer_id("not-a-peer-id")


async def test_two_hosts_connect_and_exchange_over_yamux():
    ident = Identity.from_bytes(ED25519_PRIVATE)
    with trio.fail_after(20):
        async with open_host(ident) as a, open_host() as b:
            assert a.peer_id == ident.peer_id
            assert a.addrs and all(x.endswith(f"/p2p/{ident.peer_id_str}") for x in a.addrs)
            assert not any(x.split("/p2p/")[0].endswith("/tcp/0") for x in a.addrs)

            async def echo(stream):
                try:
                    data = await stream.read(100)
                    await stream.write(data[::-1])
                finally:
                    await stream.close()

            a.host.set_stream_handler("/dscluster/test-echo/1.0.0", echo)
            await b.connect(a.peer_id, a.addrs)
            await b.connect(a.peer_id, a.addrs)  # second connect is a no-op
            assert len(b.host.get_network().connections[a.peer_id]) == 1
            stream = await b.host.new_stream(a.peer_id, ["/dscluster/test-echo/1.0.0"])
            assert type(stream.muxed_conn).__name__ == "Yamux"
            # The remote peer ID is the Noise-authenticated identity of a.
            assert stream.muxed_conn.peer_id == ident.peer_id
            await stream.write(b"hello")
            assert await stream.read(100) == b"olleh"
            await stream.close()


async def test_connect_to_dead_address_is_unavailable():
    with trio.fail_after(20):
        async with open_host() as a:
            dead = Identity.generate()
            addr = a.listen_addrs[0]
        async with open_host() as b:
            with pytest.raises(UnavailableError, match=dead.peer_id_str):
                await b.connect(dead.peer_id, [addr], timeout=5)
