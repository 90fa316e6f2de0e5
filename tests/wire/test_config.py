"""config.json: go-ds-cluster field names, validation naming file and field, 0600 writes."""

from __future__ import annotations

import json
import stat

import pytest

from dscluster.config import (
    ClientConfig,
    DatastoreConfig,
    IdentityConfig,
    NodeConfig,
    NodeEntry,
    load_client_config,
    load_node_config,
    node_config_json,
    read_join_secret,
    save_config,
    write_private_file,
)
from dscluster.errors import ConfigError
from dscluster.net.host import Identity


def _node_cfg(n: int = 2) -> NodeConfig:
    ids = [IdentityConfig.generate() for _ in range(n)]
    nodes = tuple(
        NodeEntry(i.peer_id, rng, (f"/ip4/127.0.0.1/tcp/{4001 + k}",))
        for k, (i, rng) in enumerate(zip(ids, [((0, 8191),), ((8192, 16383),)], strict=False))
    )
    return NodeConfig(identity=ids[0], swarm=nodes[0].swarm, nodes=nodes, bootstrap_node=True,
                      identity_list=tuple(ids), join_secret_file="join.secret")


def test_round_trip_and_mode_0600(tmp_path):
    cfg = _node_cfg()
    written = save_config(cfg, tmp_path)
    assert written == tmp_path / "config.json"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert load_node_config(tmp_path) == cfg
    doc = json.loads(written.read_text())
    # go-ds-cluster's names and shapes: a single range is one {start, end} object.
    assert doc["nodes"][0]["slots"] == {"start": 0, "end": 8191}
    assert set(doc) >= {"identity", "addresses", "nodes", "disable_delete", "read_only_client",
                        "bootstrap_node", "identity_list"}
    assert Identity.from_base64(doc["identity"]["sk"]).peer_id_str == doc["identity"]["peer_id"]


def test_reads_a_go_ds_cluster_style_config(tmp_path):
    ident = Identity.generate()
    other = Identity.generate()
    go_doc = {  # as go-ds-cluster's dscfg writes it (plus its conf_path and mutcask keys)
        "identity": {"peer_id": ident.peer_id_str, "sk": ident.to_base64()},
        "addresses": {"swarm": ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic"]},
        "conf_path": "",
        "nodes": [
            {"id": ident.peer_id_str, "slots": {"start": 0, "end": 8191},
             "swarm": ["/ip4/0.0.0.0/tcp/4001"]},
            {"id": other.peer_id_str, "slots": {"start": 8192, "end": 16383}, "swarm": []},
        ],
        "disable_delete": True, "read_only_client": False, "bootstrap_node": False,
        "identity_list": None,
        "mutcask": {"path": "", "cask_num": 0},
    }
    (tmp_path / "config.json").write_text(json.dumps(go_doc))
    cfg = load_node_config(tmp_path / "config.json")
    assert cfg.disable_delete and not cfg.bootstrap_node
    assert cfg.nodes[1].slots == ((8192, 16383),)
    assert cfg.datastore == DatastoreConfig()  # our defaults for the fields Go lacks


def test_several_slot_ranges_load_normalized_and_save_as_a_list(tmp_path):
    cfg = _node_cfg()
    doc = node_config_json(cfg)
    doc["nodes"][0]["slots"] = [{"start": 100, "end": 200}, {"start": 0, "end": 99},
                                {"start": 300, "end": 300}]
    doc["nodes"][1]["slots"] = {"start": 201, "end": 299}
    (tmp_path / "config.json").write_text(json.dumps(doc))
    loaded = load_node_config(tmp_path)
    assert loaded.nodes[0].slots == ((0, 200), (300, 300))
    save_config(loaded, tmp_path)
    again = json.loads((tmp_path / "config.json").read_text())
    assert again["nodes"][0]["slots"] == [{"start": 0, "end": 200}, {"start": 300, "end": 300}]


def _broken(cfg_doc, path, value):
    obj = cfg_doc
    keys = path.split("/")
    for k in keys[:-1]:
        obj = obj[int(k)] if isinstance(obj, list) else obj[k]
    last = keys[-1]
    if value is KeyError:
        del obj[last]
    elif isinstance(obj, list):
        obj[int(last)] = value
    else:
        obj[last] = value
    return cfg_doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("identity/sk", "!!!", "identity.sk: identity key is not base64"),
        ("identity/sk", "AAAA", "identity.sk: identity key is not a libp2p private key"),
        ("identity/peer_id", KeyError, "identity.peer_id: missing"),
        ("identity/peer_id", 12, "identity.peer_id: expected a string, got an integer"),
        ("addresses/swarm", [], "addresses.swarm: a node needs at least one listen address"),
        ("addresses/swarm/0", "not-an-addr", "addresses.swarm[0]: bad multiaddr"),
        ("nodes/0/id", "bogus", "nodes[0].id: bad peer ID"),
        ("nodes/1/slots", {"start": 8000, "end": 9000}, "nodes[1].slots: slot 8000 is also owned"),
        ("nodes/0/slots", {"start": 5, "end": 16384}, "nodes[0].slots: bad slot range"),
        ("nodes/0/slots", {"start": "0", "end": 5}, "nodes[0].slots.start: expected an integer"),
        ("nodes/0/slots", 7, "nodes[0].slots: expected an object or an array"),
        ("disable_delete", "yes", "disable_delete: expected true or false"),
        ("identity_list", [], "identity_list: a bootstrap node must hold"),
        ("datastore", {"kind": "redis"}, "datastore.kind: unknown kind 'redis'"),
        ("datastore", {"kind": "mongo"}, "datastore.mongodb_uri: required"),
        ("copies", 0, "copies: must be from 1 to 16"),
        ("copies", "2", "copies: expected an integer"),
        ("nodes/1/replicas", [{"start": 0, "end": 9, "copy": 0}],
         "nodes[1].replicas[0].copy: must be from 1"),
        ("nodes/1/replicas", [{"start": 9, "end": 3, "copy": 1}],
         "nodes[1].replicas[0]: bad range 9-3"),
        ("nodes/0/replicas", [{"start": 0, "end": 3, "copy": 1}],
         "nodes: slot 0: two copies on one node"),
    ],
)
def test_validation_errors_name_file_and_field(tmp_path, path, value, message):
    doc = _broken(node_config_json(_node_cfg()), path, value)
    (tmp_path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        load_node_config(tmp_path)
    assert str(err.value).startswith(str(tmp_path / "config.json") + ": ")
    assert message in str(err.value)


def test_peer_id_must_match_the_key(tmp_path):
    doc = node_config_json(_node_cfg())
    doc["identity"]["peer_id"] = Identity.generate().peer_id_str
    (tmp_path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="identity.peer_id: does not match the key"):
        load_node_config(tmp_path)


@pytest.mark.parametrize(("text", "message"), [("{", "not valid JSON"), ("[]", "top level")])
def test_unreadable_files(tmp_path, text, message):
    with pytest.raises(ConfigError, match="no such config file"):
        load_node_config(tmp_path / "missing.json")
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_node_config(tmp_path)


def test_client_config_round_trip(tmp_path):
    node = Identity.generate()
    cfg = ClientConfig(identity=IdentityConfig.generate(), read_only_client=True,
                       bootstrap_addrs=(f"/ip4/127.0.0.1/tcp/4001/p2p/{node.peer_id_str}",))
    path = save_config(cfg, tmp_path / "client.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_client_config(path) == cfg


def test_private_file_replaces_atomically_and_join_secret(tmp_path):
    target = tmp_path / "join.secret"
    target.write_text("old")
    target.chmod(0o644)
    write_private_file(target, "s3cret\n")
    assert target.read_text() == "s3cret\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["join.secret"]  # no temp file left
    cfg = _node_cfg()
    assert read_join_secret(cfg, tmp_path) == "s3cret"
    target.write_text("  \n")
    with pytest.raises(ConfigError, match="empty"):
        read_join_secret(cfg, tmp_path)


@pytest.mark.parametrize(
    ("ranges", "named"),
    [
        ([{"start": 0, "end": 150}, {"start": 100, "end": 200}], "0-150 and 100-200"),
        ([{"start": 100, "end": 200}, {"start": 0, "end": 150}], "0-150 and 100-200"),
        ([{"start": 0, "end": 200}, {"start": 0, "end": 200}], "0-200 and 0-200"),
        ([{"start": 0, "end": 500}, {"start": 600, "end": 700}, {"start": 10, "end": 20}],
         "0-500 and 10-20"),
        ([{"start": 0, "end": 100}, {"start": 100, "end": 200}], "0-100 and 100-200"),
    ],
)
def test_overlapping_slot_ranges_of_one_node_are_an_error(tmp_path, ranges, named):
    """Issue 14: they used to merge silently; adjacent ranges still merge (test above)."""
    cfg = _node_cfg()
    doc = node_config_json(cfg)
    doc["nodes"][0]["slots"] = ranges
    doc["nodes"][1]["slots"] = {"start": 701, "end": 16383}
    (tmp_path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        load_node_config(tmp_path)
    node = cfg.nodes[0].id
    assert str(err.value) == (f"{tmp_path / 'config.json'}: nodes[0].slots: node {node}: "
                              f"slot ranges {named} overlap")
    with pytest.raises(ConfigError) as err:
        load_client_config(tmp_path)
    assert f"node {node}: slot ranges {named} overlap" in str(err.value)


def test_slot_table_from_config_names_the_node_and_its_overlapping_ranges():
    from dscluster.tableconfig import table_from_config

    a, b = IdentityConfig.generate().peer_id, IdentityConfig.generate().peer_id
    nodes = [{"id": a, "slots": [{"start": 0, "end": 9000}, {"start": 8000, "end": 8191}]},
             {"id": b, "slots": {"start": 9001, "end": 16383}}]
    with pytest.raises(ConfigError, match=f"^node {a}: slot ranges 0-9000 and 8000-8191 overlap$"):
        table_from_config(nodes)
    # adjacent ranges of one node, and one range per node, still load
    nodes[0]["slots"] = [{"start": 0, "end": 8191}, {"start": 8192, "end": 9000}]
    table = table_from_config(nodes)
    assert table.owner(9000) == a and table.owner(9001) == b
