"""Fuzzing every decoder that reads bytes or text from outside.

Theory of operation
-------------------
Each `Target` names one decoder, a hypothesis strategy of hostile input and
a function feeding that input to the decoder. The one rule checked: the
decoder returns, or raises one of the project's own errors (DSClusterError:
ProtocolError, ConfigError, BadKeyError, ...). Any other exception is a
crash a peer or a bad file could trigger, and fails the run.

Strategies mix raw bytes with structured garbage (CBOR of random values,
messages with a valid tag and random fields, JSON-ish trees), because random
bytes alone rarely get past a decoder's first check.

tests/security/test_sec_fuzz.py runs every target briefly;
``python -m dscluster.testing.fuzz --minutes N`` runs them round-robin with
many more examples until N minutes are up and prints examples per target.

The module imports without hypothesis (it is a test extra: ``pip install
'ds-cluster[test]'``); building a strategy or running a target needs it.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

from dscluster.errors import DSClusterError

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # importable without the test extra; running a target needs it
    HAVE_HYPOTHESIS = False
else:
    HAVE_HYPOTHESIS = True

log = logging.getLogger(__name__)

NEEDS_HYPOTHESIS = "the fuzzer needs hypothesis: pip install 'ds-cluster[test]'"

# -- strategies ----------------------------------------------------------------------


@functools.cache
def json_like() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=30)
        | st.floats(allow_nan=False, allow_infinity=False),
        lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner,
                                                                    max_size=6),
        max_leaves=30)


@functools.cache
def cbor_like() -> st.SearchStrategy[Any]:
    scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
               | st.floats(allow_nan=True) | st.text(max_size=40) | st.binary(max_size=40))
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=6) | st.dictionaries(
            st.text(max_size=12) | st.integers(-5, 70), inner, max_size=6),
        max_leaves=30)


def _wire_tags() -> list[int]:
    from dscluster.wire import messages  # noqa: F401  (registers the tags)
    from dscluster.wire.schema import registered_tags

    return sorted(registered_tags())


def _tagged_arrays() -> st.SearchStrategy[bytes]:
    """[tag, random fields...] for every registered wire tag, as CBOR."""
    return st.builds(lambda tag, fields: cbor2.dumps([tag, *fields]),
                     st.sampled_from(_wire_tags()), st.lists(cbor_like(), max_size=8))


def _core_arrays() -> st.SearchStrategy[bytes]:
    """[tag, random fields...] for every gossip, migration and election tag, as CBOR
    (the core's messages are arrays on the one codec, doc/protocol.md)."""
    from dscluster.core.messages import MESSAGE_TYPES

    return st.builds(lambda tag, fields: cbor2.dumps([tag, *fields]),
                     st.sampled_from(sorted(MESSAGE_TYPES)), st.lists(cbor_like(), max_size=8))


def _cbor_bytes() -> st.SearchStrategy[bytes]:
    return st.binary(max_size=300) | cbor_like().map(cbor2.dumps)


# -- the decoders under test ------------------------------------------------------------

def _frames(chunks: list[bytes]) -> None:
    from dscluster.wire.framing import FrameDecoder

    dec = FrameDecoder(max_frame_size=256)
    for chunk in chunks:
        dec.feed(chunk)
        while dec.next_frame() is not None:
            pass
    dec.feed_eof()


def _wire_message(data: bytes) -> None:
    from dscluster.wire.schema import decode

    decode(data)


def _core_message(data: bytes) -> None:
    from dscluster.core.messages import decode

    decode(data)


def _table_cbor(data: bytes) -> None:
    from dscluster.core.table import SlotTable

    SlotTable.from_cbor(data)


def _table_config(obj: Any) -> None:
    from dscluster.tableconfig import table_from_config

    table_from_config(obj)


def _config_file(loader_name: str) -> Callable[[Any], None]:
    def check(content: Any) -> None:
        import dscluster.config as config

        loader = getattr(config, loader_name)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "config.json")
            with open(path, "wb") as f:
                f.write(content if isinstance(content, bytes) else json.dumps(content).encode())
            loader(path)
    return check


def _cid(value: str | bytes) -> None:
    from dscluster.blocks import parse_cid

    parse_cid(value)


def _key(text: str) -> None:
    from dscluster.datastore import Key

    Key(text)


def _kubo_spec(obj: Any) -> None:
    from ipfs_plugin.spec import parse_spec

    parse_spec(obj)


def _dagpb(data: bytes) -> None:
    from dscluster.ipld.dagpb import decode_node

    decode_node(data)


def _bitswap(data: bytes) -> None:
    from ipfs_plugin.bitswap_message import decode

    decode(data)


def _swarm_key(text: str) -> None:
    from dscluster.net.pnet import parse_swarm_key

    parse_swarm_key(text)


def _clients_file(lines: list[str]) -> None:
    from dscluster.node.clients import parse_clients

    parse_clients(lines)


def _config_bytes() -> st.SearchStrategy[bytes]:
    # Non-UTF-8 bytes once crashed config._read_json (UnicodeDecodeError): keep both.
    return st.text(max_size=100).map(str.encode) | st.binary(max_size=100)


def _spec_like() -> st.SearchStrategy[Any]:
    kinds = st.sampled_from(["mount", "flatfs", "levelds", "measure", "cluster", "x"])
    node = st.recursive(
        st.fixed_dictionaries({"type": kinds}, optional={
            "path": st.text(max_size=10), "prefix": st.text(max_size=10),
            "mountpoint": st.text(max_size=10), "sync": st.booleans(),
            "shardFunc": st.text(max_size=30), "compression": st.text(max_size=5)}),
        lambda inner: st.fixed_dictionaries({"type": kinds}, optional={
            "mounts": st.lists(inner, max_size=3), "child": inner}),
        max_leaves=6)
    return node | json_like()


@dataclass(frozen=True)
class Target:
    name: str
    strategy: Callable[[], st.SearchStrategy[Any]]
    check: Callable[[Any], None]


TARGETS: tuple[Target, ...] = (
    Target("frames", lambda: st.lists(st.binary(max_size=80), max_size=8), _frames),
    Target("wire-messages", lambda: _cbor_bytes() | _tagged_arrays(), _wire_message),
    Target("core-messages", lambda: _cbor_bytes() | _core_arrays(), _core_message),
    Target("table-cbor", _cbor_bytes, _table_cbor),
    Target("table-config", lambda: json_like() | st.lists(json_like(), max_size=4),
           _table_config),
    Target("node-config", lambda: json_like() | _config_bytes(),
           _config_file("load_node_config")),
    Target("client-config", lambda: json_like() | _config_bytes(),
           _config_file("load_client_config")),
    Target("cid", lambda: st.text(max_size=80) | st.binary(max_size=80)
           | st.sampled_from(["bafkqaaa", "Qm", "z", "f01", "bafy" + "a" * 55]), _cid),
    Target("key", lambda: st.text(max_size=60), _key),
    Target("kubo-spec", _spec_like, _kubo_spec),
    Target("dag-pb", lambda: st.binary(max_size=300), _dagpb),
    Target("bitswap", lambda: st.binary(max_size=300), _bitswap),
    Target("swarm-key", lambda: st.text(max_size=150), _swarm_key),
    Target("clients-file", lambda: st.lists(st.text(max_size=70), max_size=5), _clients_file),
)


def run_target(target: Target, max_examples: int, seed: int | None = None) -> int:
    """Run one target; returns how many examples ran. A crash propagates."""
    if not HAVE_HYPOTHESIS:
        raise RuntimeError(NEEDS_HYPOTHESIS)
    count = 0

    @settings(max_examples=max_examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), derandomize=seed is None)
    @given(target.strategy())
    def fuzz(value: Any) -> None:
        nonlocal count
        count += 1
        try:
            target.check(value)
        except DSClusterError:
            pass

    if seed is not None:
        fuzz._hypothesis_internal_use_seed = seed  # type: ignore[attr-defined]
    fuzz()
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dscluster.testing.fuzz",
                                     description="Fuzz every decoder for N minutes.")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--examples", type=int, default=2000, help="per target per round")
    parser.add_argument("--only", default="", help="comma-separated target names")
    args = parser.parse_args(argv)
    if not HAVE_HYPOTHESIS:
        parser.error(NEEDS_HYPOTHESIS)
    chosen = [t for t in TARGETS if not args.only or t.name in args.only.split(",")]
    if not chosen:
        parser.error(f"no target named {args.only!r}")
    deadline = time.monotonic() + args.minutes * 60
    totals = dict.fromkeys((t.name for t in chosen), 0)
    rounds = 0
    while time.monotonic() < deadline:
        for target in chosen:
            try:
                totals[target.name] += run_target(target, args.examples,
                                                  seed=rounds * 1000 + len(totals))
            except Exception as exc:
                print(f"CRASH in {target.name}: {exc!r}", file=sys.stderr)
                raise
            print(f"round {rounds}: {target.name:15} {totals[target.name]:9d} examples so far",
                  flush=True)
            if rounds and time.monotonic() >= deadline:
                break  # the first round always covers every target
        rounds += 1
    for name, n in totals.items():
        print(f"{name:15} {n:9d} examples, no crash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
