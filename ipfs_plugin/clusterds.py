"""The ``clusterds`` datastore type: a Kubo ``Datastore.Spec`` entry for the cluster.

go-ds-cluster's plugin is configured as ``{"type": "clusterds", "cfg":
"clusterds.json"}``, where the file (relative to the repo) is a client config
as ``dscfg client clusterds.json`` or ``dsclient init`` writes it. Importing
this module registers the type with ``ipfs_plugin.spec``; opening it gives a
ClusterClient, so an IPFS node keeps its blocks in the cluster.

A spec opener returns a bare Datastore, with no nursery to hold the client's
background tasks (its streams and per-node senders). They run in a nursery
spawned as a trio *system task* (``trio.lowlevel.spawn_system_task``) and
ended by the datastore's ``close()``, or at the end of the trio run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import trio

from dsclient.client import ClientOptions, ClusterClient, config_table, options_for_config
from dscluster.config import load_client_config
from dscluster.datastore.base import Datastore
from dscluster.errors import ConfigError
from ipfs_plugin.spec import SpecContext, register_datastore_type

log = logging.getLogger(__name__)

TYPE_NAME = "clusterds"


class DetachedClusterClient(ClusterClient):
    """A ClusterClient whose tasks live in their own system-task nursery."""

    _home: trio.Nursery | None = None

    async def _close(self) -> None:
        await super()._close()
        if self._home is not None:
            self._home.cancel_scope.cancel()


async def _home_nursery() -> trio.Nursery:
    """A nursery that lives until cancelled, independent of the caller's tasks."""
    ready = trio.Event()
    holder: list[trio.Nursery] = []

    async def home() -> None:
        try:
            async with trio.open_nursery() as nursery:
                holder.append(nursery)
                ready.set()
                await trio.sleep_forever()
        except Exception:  # an error here would crash the whole trio run
            log.exception("clusterds background tasks failed")

    trio.lowlevel.spawn_system_task(home, name="clusterds")
    await ready.wait()
    return holder[0]


async def open_cluster_datastore(config_path: str, options: ClientOptions = ClientOptions()
                                 ) -> ClusterClient:
    """A ClusterClient for a client config file that needs no enclosing nursery."""
    cfg = load_client_config(config_path)
    home = await _home_nursery()
    try:
        client = await DetachedClusterClient.start(home, cfg.identity.identity(),
                                                   table=config_table(cfg),
                                                   options=options_for_config(config_path, options))
    except BaseException:
        home.cancel_scope.cancel()
        raise
    assert isinstance(client, DetachedClusterClient)
    client._home = home
    return client


async def open_clusterds(params: Mapping[str, Any], ctx: SpecContext) -> Datastore:
    """The spec factory: ``{"type": "clusterds", "cfg": "<client config, repo-relative>"}``."""
    cfg = params.get("cfg")
    if not isinstance(cfg, str) or not cfg:
        raise ctx.error("cfg", "missing: the client config file (e.g. clusterds.json)")
    path = ctx.resolve(cfg)
    if not path.exists():
        raise ConfigError(f"{ctx.where}.cfg: {path}: no such file "
                          "(write it with `dscfg client` or `dsclient init`)")
    return await open_cluster_datastore(str(path))


register_datastore_type(TYPE_NAME, open_clusterds)
