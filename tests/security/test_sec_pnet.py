"""Private network: hosts with the swarm key talk; a stranger cannot connect."""

import os
import stat

import pytest
import trio

from dscluster.errors import ConfigError, UnavailableError
from dscluster.net.host import open_host, parse_peer_id
from dscluster.net.pnet import (
    format_swarm_key,
    load_swarm_key,
    new_swarm_key,
    parse_swarm_key,
    xsalsa20,
)
from dscluster.net.rpc import Service, open_rpc_client, serve_rpc
from dscluster.wire import messages as wm


def test_xsalsa20_matches_nacl_vector() -> None:
    # NaCl's tests/stream3: the first 32 bytes of the XSalsa20 stream.
    key = bytes.fromhex("1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389")
    nonce = bytes.fromhex("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37")
    assert xsalsa20(key, nonce).encrypt(bytes(32)).hex() == (
        "eea6a7251c1e72916d11c2cb214d3c252539121d8e234e652d651fa4c8cff880")


def test_swarm_key_format_roundtrip_and_errors() -> None:
    key = new_swarm_key()
    text = format_swarm_key(key)
    assert text.startswith("/key/swarm/psk/1.0.0/\n/base16/\n")
    assert parse_swarm_key(text) == key
    for bad in ("", "garbage", text.replace("base16", "base64"), text[:-10] + "\n",
                text.replace(key.hex()[:2], "zz")):
        with pytest.raises(ConfigError):
            parse_swarm_key(bad)


class Echo:
    async def handle(self, peer: object, request: wm.Request) -> wm.Response:
        return wm.Ok(request.id, b"pong")

    def stream(self, peer: object, request: object) -> object:
        raise NotImplementedError


async def test_same_key_connects_stranger_cannot() -> None:
    key = new_swarm_key()
    with trio.fail_after(30):
        async with open_host(swarm_key=key) as server, open_host(swarm_key=key) as member, \
                open_host() as plain, open_host(swarm_key=new_swarm_key()) as other:
            echo: Service = Echo()  # type: ignore[assignment]
            async with serve_rpc(server.host, wm.STORE_PROTOCOL, echo), \
                    open_rpc_client(member.host) as rpc:
                await member.connect(server.peer_id, server.addrs)
                reply = await rpc.call(server.peer_id, wm.STORE_PROTOCOL, wm.Get(1, "/k"),
                                       timeout=10)
                assert reply == wm.Ok(1, b"pong")
                for stranger in (plain, other):
                    with pytest.raises(UnavailableError):
                        await stranger.connect(server.peer_id, server.addrs, timeout=2)
                    assert not stranger.host.get_network().get_connections(server.peer_id)
                # the server still serves its member after the strangers' attempts
                reply = await rpc.call(server.peer_id, wm.STORE_PROTOCOL, wm.Get(2, "/k"),
                                       timeout=10)
                assert reply == wm.Ok(2, b"pong")


async def test_keyed_host_cannot_reach_plain_host() -> None:
    with trio.fail_after(20):
        async with open_host() as plain, open_host(swarm_key=new_swarm_key()) as keyed:
            with pytest.raises(UnavailableError):
                await keyed.connect(plain.peer_id, plain.addrs, timeout=2)


def test_load_swarm_key_file(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "swarm.key")
    key = new_swarm_key()
    with open(path, "w") as f:
        f.write(format_swarm_key(key))
    assert load_swarm_key(path) == key
    with pytest.raises(ConfigError):
        load_swarm_key(os.path.join(tmp_path, "absent"))
    assert stat.S_ISREG(os.stat(path).st_mode)


async def test_private_network_process_node(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A dscluster process started from a --private-network config takes only key holders."""
    import subprocess

    from dscluster.net.host import Identity
    from dscluster.node.clients import save_clients
    from dscluster.testing.cluster import _script

    conf = tmp_path / "n0"
    out = subprocess.run([_script("dscfg"), "cluster", "-n", "1", str(conf),
                          "--private-network"], capture_output=True, text=True, check=True)
    addr = out.stdout.splitlines()[0]
    peer = addr.rsplit("/p2p/", 1)[1]
    client = Identity.generate()
    save_clients(str(conf), [f"{client.peer_id_str} read-only"])
    key = load_swarm_key(conf / "swarm.key")
    log = open(tmp_path / "n0.log", "wb")
    proc = subprocess.Popen([_script("dscluster"), "--conf", str(conf), "--datastore", "memory"],
                            stdout=subprocess.PIPE, stderr=log)
    try:
        with trio.fail_after(60):
            assert proc.stdout is not None
            line = await trio.to_thread.run_sync(proc.stdout.readline)
            assert b"listening" in line
            async with open_host(client, swarm_key=key) as host, \
                    open_rpc_client(host.host) as rpc:
                await host.connect(peer, [addr])
                info = await rpc.call(parse_peer_id(peer), wm.STORE_PROTOCOL, wm.Info(1),
                                      timeout=10)
                assert isinstance(info, wm.NodeInfo) and info.peer_id == peer
            async with open_host(client) as stranger:
                with pytest.raises(UnavailableError):
                    await stranger.connect(peer, [addr], timeout=3)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()

