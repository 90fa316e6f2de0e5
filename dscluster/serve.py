"""The data node's runtime behind `dscluster`: join a cluster, then run a node.

dscluster/cli.py parses the command line and imports this module only to act,
so `dscluster --help` and `--version` never load py-libp2p.
"""

from __future__ import annotations

import json
import logging
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from dscluster.config import (
    CONFIG_JSON,
    NodeConfig,
    load_node_config,
    read_join_secret,
    table_of,
    write_private_file,
)
from dscluster.core.gossip import DAEMON_GOSSIP
from dscluster.datastore.open import open_datastore, write_mode
from dscluster.net.host import LOOPBACK_ANY_PORT, Identity, open_host
from dscluster.net.pnet import swarm_key_of
from dscluster.node import NodeSettings, run_data_node
from dscluster.node.admin import serve_admin
from dscluster.node.clients import format_clients, load_clients, save_clients
from dscluster.node.join import NEW_IDENTITY, JoinServer, fetch_config
from dscluster.wire.messages import JOIN_PROTOCOL

log = logging.getLogger("dscluster")

__all__ = ["NEW_IDENTITY", "join", "keep_bound_ports", "run"]


async def join(conf: Path, bootstrapper: str, identity: str, secret: str,
               listen: list[str]) -> None:
    log.info("no %s in %s: joining through %s as identity %s", CONFIG_JSON, conf, bootstrapper,
             identity)
    own = Identity.generate() if identity == NEW_IDENTITY else None
    config, clients = await fetch_config(bootstrapper, identity, secret, host_identity=own,
                                         swarm_key=swarm_key_of(conf))
    if own is not None:
        config["identity"] = {"peer_id": own.peer_id_str, "sk": own.to_base64()}
        config["addresses"] = {"swarm": listen or [LOOPBACK_ANY_PORT]}
        log.info("joined as new member %s (no slots yet)", own.peer_id_str)
    conf.mkdir(parents=True, exist_ok=True)
    write_private_file(conf / CONFIG_JSON, json.dumps(config, indent="\t") + "\n")
    save_clients(str(conf), clients)
    load_node_config(conf)  # refuse a config we could not start from, now
    log.info("wrote %s", conf / CONFIG_JSON)


def keep_bound_ports(conf: Path, configured: list[str], bound: list[str]) -> None:
    """Write the ports bound for "any port" (tcp/0) into config.json, so that a restart
    listens where the cluster's table says this node is (a node that joined with --join
    has tcp/0 there until its first start)."""
    if not any(addr.rstrip("/").endswith("/tcp/0") for addr in configured) \
            or bound == configured:
        return
    path = conf / CONFIG_JSON
    config = json.loads(path.read_text(encoding="utf-8"))
    config.setdefault("addresses", {})["swarm"] = list(bound)
    write_private_file(path, json.dumps(config, indent="\t") + "\n")
    log.info("saved the bound addresses %s in %s: a restart listens there again",
             ", ".join(bound), path)


async def run(conf: Path, cfg: NodeConfig, kind: str, mongodb: str, listen: list[str],
              disable_delete: bool, tick: float, sync: bool = False, http: str = "",
              http_token: str | None = None) -> None:
    identity = cfg.identity.identity()
    me = identity.peer_id_str
    conf_dir = str(conf)
    clients = load_clients(conf_dir)
    settings = NodeSettings(conf_dir, table_of(cfg), clients,
                            read_only_client=cfg.read_only_client,
                            disable_delete=disable_delete or cfg.disable_delete,
                            tick_interval=tick, gossip=DAEMON_GOSSIP)
    if http:  # refuse a bad --http before opening anything (dscluster/http/server.py)
        from dscluster.http.server import check_bind
        check_bind(http, http_token)
    ds = open_datastore(kind, conf_dir, cfg.datastore.path, mongodb, me, sync)
    try:
        async with open_host(identity, listen or list(cfg.swarm),
                             swarm_key=swarm_key_of(conf)) as host, \
                run_data_node(host, ds, settings) as node, serve_admin(node, conf_dir), \
                AsyncExitStack() as extras:
            if http:
                from dscluster.http.server import serve_node_http
                for url in await extras.enter_async_context(
                        serve_node_http(node, http, token=http_token)):
                    print(f"dscluster: HTTP on {url} (/ipfs gateway, /metrics, /healthz)",
                          flush=True)
            if cfg.bootstrap_node:
                secret = read_join_secret(cfg, conf)
                driver = node.driver

                async def add_member(peer: str) -> None:
                    await driver.call(driver.core.add_member, peer, [])

                server = JoinServer(cfg, secret, me, node.driver.addrs_of,
                                    lambda: format_clients(load_clients(conf_dir)), add_member)
                host.host.set_stream_handler(JOIN_PROTOCOL, server.handle_stream)  # type: ignore[arg-type]
            if not listen:
                keep_bound_ports(conf, list(cfg.swarm), host.listen_addrs)
            for addr in node.addrs:
                print(f"dscluster: node listening on {addr}", flush=True)
            mode = write_mode(kind, sync)
            slots = node.core.table.slots_of(me)
            print(f"dscluster: {kind} datastore ({mode} writes), slots {slots or 'none yet'}", flush=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("%s: shutting down", signal.Signals(signum).name)
                    break
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            try:
                await ds.sync("/")
            finally:
                await ds.close()
    log.info("stopped; datastore closed")
