"""Namespace and key-transform wrappers: the suite through them, and what they rewrite."""

from dataclasses import dataclass

import pytest

from dscluster.datastore import Key, MemoryDatastore, Query
from dscluster.datastore.namespace import (
    KeyTransformDatastore,
    NamespaceDatastore,
    PrefixTransform,
)
from dscluster.datastore.query import FilterKeyCompare, FilterKeyPrefix, OrderByKeyDescending
from dscluster.errors import BadKeyError
from dscluster.testing.conformance import DatastoreSuite, OpenWith


class TestNamespace(DatastoreSuite):
    @pytest.fixture
    def ds_factory(self) -> OpenWith:
        return OpenWith(lambda: NamespaceDatastore(Key("/ns/deep"), MemoryDatastore()))


class TestRootNamespace(DatastoreSuite):
    @pytest.fixture
    def ds_factory(self) -> OpenWith:
        return OpenWith(lambda: NamespaceDatastore("/", MemoryDatastore()))


@dataclass(frozen=True)
class ReverseTransform:
    """Not order-preserving: "/a/b" is stored as "/b/a"."""

    def convert_key(self, key: Key) -> Key:
        return key.reverse()

    def invert_key(self, key: Key) -> Key:
        return key.reverse()


class TestGeneralKeyTransform(DatastoreSuite):
    matrix_size = 2_000  # every query re-reads the whole child; the logic is the same

    @pytest.fixture
    def ds_factory(self) -> OpenWith:
        return OpenWith(lambda: KeyTransformDatastore(MemoryDatastore(), ReverseTransform()))


def test_prefix_transform() -> None:
    t = PrefixTransform(Key("/ns"))
    assert t.convert_key(Key("/a/b")) == Key("/ns/a/b")
    assert t.invert_key(Key("/ns/a/b")) == Key("/a/b")
    assert t.invert_key(Key("/ns")) == Key("/")
    with pytest.raises(BadKeyError):
        t.invert_key(Key("/nsx/a"))
    root = PrefixTransform(Key("/"))
    assert root.convert_key(Key("/a")) == Key("/a")
    assert root.invert_key(Key("/a")) == Key("/a")


async def test_namespace_rewrites_keys_and_queries_only_under_it() -> None:
    child = MemoryDatastore()
    await child.put("/outside/x", b"o")
    await child.put("/nsx/y", b"o")  # a string prefix of the namespace, not a path prefix
    ns = NamespaceDatastore("/ns", child)
    await ns.put("/a", b"1")
    await ns.put("/b/c", b"2")
    assert await child.get("/ns/a") == b"1"
    assert await child.get("/ns/b/c") == b"2"
    got = [(e.key, e.value) for e in await (await ns.query(Query())).rest()]
    assert sorted(got) == [("/a", b"1"), ("/b/c", b"2")]
    assert [e.key for e in await (await ns.query(Query(prefix="/b"))).rest()] == ["/b/c"]
    q = Query(filters=(FilterKeyCompare(">", "/a"),), orders=(OrderByKeyDescending(),))
    assert [e.key for e in await (await ns.query(q)).rest()] == ["/b/c"]
    q = Query(filters=(FilterKeyPrefix("/b/"),))
    assert [e.key for e in await (await ns.query(q)).rest()] == ["/b/c"]
    await ns.delete("/a")
    assert not await child.has("/ns/a")
    batch = await ns.batch()
    batch.put("/z", b"3")
    await batch.commit()
    assert await child.get("/ns/z") == b"3"
    await ns.close()
    assert child.closed  # the wrapper owns its child


async def test_general_transform_skips_keys_it_cannot_invert() -> None:
    @dataclass(frozen=True)
    class OnlyUnderA:
        def convert_key(self, key: Key) -> Key:
            return Key("/A").child(key)

        def invert_key(self, key: Key) -> Key:
            if not Key("/A").is_ancestor_of(key):
                raise BadKeyError(str(key))
            return Key(str(key)[2:])

    child = MemoryDatastore()
    await child.put("/B/x", b"b")
    ds = KeyTransformDatastore(child, OnlyUnderA())
    await ds.put("/x", b"a")
    got = [(e.key, e.value) for e in await (await ds.query(Query())).rest()]
    assert got == [("/x", b"a")]
