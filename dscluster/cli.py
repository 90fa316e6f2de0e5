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

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from dscluster.cliutil import VERSION_HELP, log_level_of, run_app, version_callback
from dscluster.config import CONFIG_JSON, DEFAULT_DATASTORE
from dscluster.errors import ConfigError

log = logging.getLogger("dscluster")
JOIN_SECRET_ENV = "DSCLUSTER_JOIN_SECRET"  # the join secret, kept off the command line
HTTP_TOKEN_ENV = "DSCLUSTER_HTTP_TOKEN"  # --http-token, kept off the command line
CONF_ENV = "DSCLUSTER_CONF"  # the default of --conf
app = typer.Typer(add_completion=True, pretty_exceptions_enable=False, rich_markup_mode=None)


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
    import trio  # the runtime, only now: --help and --version stay light

    from dscluster import serve
    from dscluster.config import load_node_config

    conf = conf.expanduser()
    if not (conf / CONFIG_JSON).exists():
        if not bootstrapper:
            raise ConfigError(f"no {conf / CONFIG_JSON}: run dscfg cluster, or join with "
                              "--bootstrapper MA --identity I --join-secret-file F")
        if join_new and identity:
            raise ConfigError("--join makes a new identity: leave out --identity")
        if join_new:
            identity = serve.NEW_IDENTITY
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
        trio.run(serve.join, conf, bootstrapper, identity, secret, list(listen or ()))
    cfg = load_node_config(conf)
    kind = datastore or cfg.datastore.kind
    trio.run(serve.run, conf, cfg, kind, mongodb or cfg.datastore.mongodb_uri, list(listen or ()),
             disable_delete, tick, sync or cfg.datastore.sync, http, http_token or None)


def main(argv: list[str] | None = None) -> int:
    return run_app(app, "dscluster", argv)


if __name__ == "__main__":
    sys.exit(main())
