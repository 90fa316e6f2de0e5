"""dscluster: run a data node.

``dscluster --conf DIR`` runs the node configured in DIR/config.json (written
by ``dscfg cluster`` for the bootstrap node). A new node with an empty DIR
joins with ``--bootstrapper MA --identity I`` and the join secret (from
``--join-secret-file F`` or the environment's DSCLUSTER_JOIN_SECRET; never
on the command line, which every user sees in ps): it fetches
its config from the bootstrap node (with ``--join`` instead of ``--identity``
it makes a new key and becomes a member that owns no slots until a
rebalance gives it some), writes DIR/config.json (0600), and from
then on starts from that file alone. SIGINT or SIGTERM stops the node within
a few seconds, flushing and closing its datastore. User errors print one line
on stderr and exit 1. With DIR/swarm.key (``dscfg cluster --private-network``;
copy it into a joiner's DIR before joining) the node is in that private
network: peers without the key cannot connect. DSCLUSTER_CONF is the default
of ``--conf``; ``--version`` prints the version.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated

import trio
import typer

from dscluster.cliutil import VERSION_HELP, log_level_of, run_app, version_callback
from dscluster.config import (
    CONFIG_JSON,
    DEFAULT_DATASTORE,
    NodeConfig,
    load_node_config,
    read_join_secret,
    table_of,
    write_private_file,
)
from dscluster.datastore.open import open_datastore, write_mode
from dscluster.errors import ConfigError
from dscluster.net.host import LOOPBACK_ANY_PORT, Identity, open_host
from dscluster.net.pnet import swarm_key_of
from dscluster.node import NodeSettings, run_data_node
from dscluster.node.admin import serve_admin
from dscluster.node.clients import format_clients, load_clients, save_clients
from dscluster.node.join import NEW_IDENTITY, JoinServer, fetch_config
from dscluster.wire.messages import JOIN_PROTOCOL

log = logging.getLogger("dscluster")
JOIN_SECRET_ENV = "DSCLUSTER_JOIN_SECRET"  # the join secret, kept off the command line
HTTP_TOKEN_ENV = "DSCLUSTER_HTTP_TOKEN"  # --http-token, kept off the command line
CONF_ENV = "DSCLUSTER_CONF"  # the default of --conf
app = typer.Typer(add_completion=True, pretty_exceptions_enable=False, rich_markup_mode=None)


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
                            tick_interval=tick)
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


@app.command()
def main_command(
    conf: Annotated[Path, typer.Option(
        envvar=CONF_ENV, show_envvar=True, help="Config directory.")] = Path(".dscluster"),
    bootstrapper: Annotated[str, typer.Option(
        help="Bootstrap node multiaddr (with /p2p/) to fetch the config from when DIR has none.",
    )] = "",
    identity: Annotated[str, typer.Option(
        help="Which of the cluster's identities to join as (index or peer ID).")] = "",
    join_new: Annotated[bool, typer.Option(
        "--join", help="Join as a new member with a new key and no slots.")] = False,
    join_secret: Annotated[str, typer.Option(
        envvar=JOIN_SECRET_ENV, show_envvar=True,
        help="The join secret printed by dscfg. Prefer the environment variable or "
             "--join-secret-file: a command line is visible to every user (ps).")] = "",
    join_secret_file: Annotated[Path | None, typer.Option(
        help="A file holding the join secret (such as the bootstrap's DIR/join.secret).")] = None,
    datastore: Annotated[str, typer.Option(
        help="leveldb, flatfs, hybrid, mongo or memory (default: the config's, "
             f"{DEFAULT_DATASTORE}).")] = "",
    mongodb: Annotated[str, typer.Option(help="MongoDB URI for --datastore mongo.")] = "",
    disable_delete: Annotated[bool, typer.Option(help="Refuse deletes from clients.")] = False,
    sync: Annotated[bool, typer.Option(
        "--sync", "--durable",
        help="Acknowledge a write only once it survives power loss (LevelDB fsync per "
             "write, MongoDB j=true; flatfs always syncs). Also config.json's "
             "datastore.sync.")] = False,
    listen: Annotated[list[str] | None, typer.Option(
        help="Listen multiaddr (repeatable); default: the config's addresses.swarm.")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    tick: Annotated[float, typer.Option(help="Seconds per gossip tick.")] = 0.5,
    http: Annotated[str, typer.Option(
        help="Serve HTTP on HOST:PORT: an IPFS gateway (/ipfs/CID), /metrics and /healthz "
             "(doc/http.md). Off by default; a non-loopback HOST needs --http-token.")] = "",
    http_token: Annotated[str, typer.Option(
        envvar=HTTP_TOKEN_ENV, show_envvar=True,
        help="Bearer token HTTP clients must send (all but /healthz). Prefer the "
             "environment variable: a command line is visible to every user (ps).")] = "",
    version: Annotated[bool, typer.Option(
        "--version", callback=version_callback("dscluster"), is_eager=True,
        help=VERSION_HELP)] = False,
) -> None:
    """Run a ds-cluster data node."""
    level = log_level_of(log_level)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # py-libp2p detaches its loggers at import (records then reach stderr bare) and
    # sets some to INFO: route them through our format, at our level or WARNING.
    libp2p_log = logging.getLogger("libp2p")
    libp2p_log.propagate = True
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("libp2p."):
            logging.getLogger(name).setLevel(logging.NOTSET)
    if level > logging.DEBUG:
        libp2p_log.setLevel(logging.WARNING)  # its INFO is per connection
        # It logs an ERROR per failed dial while a peer is down; gossip reports that once.
        logging.getLogger("libp2p.transport.tcp").setLevel(logging.CRITICAL)
    conf = conf.expanduser()
    if not (conf / CONFIG_JSON).exists():
        if not bootstrapper:
            raise ConfigError(f"no {conf / CONFIG_JSON}: run dscfg cluster, or join with "
                              "--bootstrapper MA --identity I --join-secret-file F")
        if join_new and identity:
            raise ConfigError("--join makes a new identity: leave out --identity")
        if join_new:
            identity = NEW_IDENTITY
        if not identity:
            raise ConfigError("--bootstrapper needs --identity or --join")
        secret = join_secret
        if secret and secret != os.environ.get(JOIN_SECRET_ENV):  # it came from argv
            log.warning("--join-secret on the command line is visible to every user (ps): "
                        "use --join-secret-file F or %s", JOIN_SECRET_ENV)
        if join_secret_file is not None:
            try:
                secret = join_secret_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{join_secret_file}: {exc.strerror}") from None
        if not secret:
            raise ConfigError(f"joining needs --join-secret-file F or {JOIN_SECRET_ENV}")
        trio.run(join, conf, bootstrapper, identity, secret, list(listen or ()))
    cfg = load_node_config(conf)
    kind = datastore or cfg.datastore.kind
    trio.run(run, conf, cfg, kind, mongodb or cfg.datastore.mongodb_uri, list(listen or ()),
             disable_delete, tick, sync or cfg.datastore.sync, http, http_token or None)


def main(argv: list[str] | None = None) -> int:
    return run_app(app, "dscluster", argv)



if __name__ == "__main__":
    sys.exit(main())
