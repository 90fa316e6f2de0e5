"""Key: cleaning, structure and ordering, with go-datastore's test vectors."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dscluster.datastore.key import Key, as_key, clean_path, is_clean
from dscluster.errors import BadKeyError


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("", "/"),
        ("/", "/"),
        ("a", "/a"),
        ("/a/", "/a"),
        ("//a//b//", "/a/b"),
        ("/a/./b/../c", "/a/c"),
        ("/../a", "/a"),
        ("/..", "/"),
        ("a/b/../../..", "/"),
        ("/a:b/c d", "/a:b/c d"),
    ],
)
def test_key_cleans_like_go_path_clean(raw: str, clean: str) -> None:
    assert str(Key(raw)) == clean


def test_key_structure_matches_go_vectors() -> None:
    k = Key("/Comedy/MontyPython/Actor:JohnCleese")
    assert k.namespaces() == ["Comedy", "MontyPython", "Actor:JohnCleese"]
    assert k.list() == k.namespaces()
    assert k.base_namespace() == "Actor:JohnCleese"
    assert k.type() == "Actor"
    assert k.name() == "JohnCleese"
    assert k.instance("Bar") == Key("/Comedy/MontyPython/Actor:JohnCleese:Bar")
    assert k.path() == Key("/Comedy/MontyPython/Actor")
    assert k.parent() == Key("/Comedy/MontyPython")
    assert k.reverse() == Key("/Actor:JohnCleese/MontyPython/Comedy")
    assert k.bytes() == b"/Comedy/MontyPython/Actor:JohnCleese"
    assert Key("/a:b:c").type() == "a:b"
    assert Key("/abc").type() == ""
    assert Key("/abc").name() == "abc"


def test_root_and_top_level() -> None:
    root = Key("/")
    assert root.namespaces() == [""]
    assert root.parent() == root
    assert Key("/a").parent() == root
    assert Key("/a").is_top_level()
    assert not Key("/a/b").is_top_level()


def test_children() -> None:
    assert Key("/a").child(Key("/b/c")) == Key("/a/b/c")
    assert Key("/").child(Key("/b")) == Key("/b")
    assert Key("/a").child(Key("/")) == Key("/a")
    assert Key("/a").child_string("b/../c") == Key("/a/c")
    with pytest.raises(BadKeyError):
        Key("/a").child("/b")  # type: ignore[arg-type]


def test_ancestry_is_on_path_boundaries() -> None:
    foo = Key("/foo")
    assert foo.is_ancestor_of(Key("/foo/bar"))
    assert not foo.is_ancestor_of(Key("/foobar"))
    assert not foo.is_ancestor_of(foo)
    assert Key("/").is_ancestor_of(foo)
    assert not Key("/").is_ancestor_of(Key("/"))
    assert Key("/foo/bar/baz").is_descendant_of(foo)
    assert not Key("/foobar").is_descendant_of(foo)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("/a/b/c", "/a/b/c/d"),
        ("/a/b", "/a/b/c/d"),
        ("/a", "/a/b/c/d"),
        ("/a/a/c", "/a/b/c"),
        ("/a/a/d", "/a/b/c"),
        ("/a/b/c/d/e/f/g/h", "/b"),
        ("/", "/a"),
        ("/a/b", "/a-b"),  # by namespaces; as plain strings "/a-b" < "/a/b"
    ],
)
def test_less_matches_go(a: str, b: str) -> None:
    assert Key(a) < Key(b)
    assert not Key(b) < Key(a)
    assert Key(b) > Key(a)


def test_keys_are_values() -> None:
    assert Key("/a/") == Key("a")
    assert hash(Key("/a/")) == hash(Key("a"))
    assert len({Key("/a"), Key("a/"), Key("/b")}) == 2
    assert Key(Key("/x")) == Key("/x")
    assert Key("/a") != "/a"
    with pytest.raises(AttributeError):
        Key("/a")._s = "/b"  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["", "a", "/a/", "a/"])
def test_raw_rejects_unclean_ends(bad: str) -> None:
    with pytest.raises(BadKeyError):
        Key.raw(bad)


def test_raw_does_not_clean_the_middle() -> None:
    assert str(Key.raw("/a//b")) == "/a//b"
    assert str(Key.raw("/")) == "/"


@pytest.mark.parametrize("bad", [None, 1, b"/a", ["a"], 1.5])
def test_non_str_input_is_bad_key(bad: object) -> None:
    with pytest.raises(BadKeyError):
        Key(bad)  # type: ignore[arg-type]
    with pytest.raises(BadKeyError):
        as_key(bad)
    with pytest.raises(BadKeyError):
        Key.raw(bad)  # type: ignore[arg-type]


def test_with_namespaces() -> None:
    assert Key.with_namespaces(["a", "b", "c:d"]) == Key("/a/b/c:d")
    assert Key.with_namespaces([]) == Key("/")


segments = st.text(alphabet="ab:./", max_size=12)


@given(segments)
def test_clean_is_idempotent_and_raw_accepts_it(s: str) -> None:
    k = Key(s)
    assert Key(str(k)) == k
    assert Key.raw(str(k)) == k
    assert str(k).startswith("/")
    assert str(k) == "/" or not str(k).endswith("/")


@given(st.lists(segments.map(Key), min_size=1, max_size=8))
def test_order_is_namespace_wise(keys: list[Key]) -> None:
    assert sorted(keys) == sorted(keys, key=lambda k: k.namespaces())
    for a in keys:
        for b in keys:
            assert (a < b) + (b < a) + (a == b) == 1


@given(st.text(alphabet="/.ab:", max_size=12))
def test_clean_fast_path_agrees_with_full_cleaning(s):
    # is_clean lets Key and as_key skip cleaning: it must never accept a string cleaning changes
    if is_clean(s):
        assert clean_path(s) == s
    assert str(as_key(s)) == str(Key(s)) == clean_path(s)
    assert is_clean(clean_path(s)) or "/." in clean_path(s)  # only dot-names take the slow path


def test_keys_from_str_subclasses_and_keys():
    class Name(str):
        pass

    assert as_key(Name("a//b")) == Key("/a/b")
    k = Key("/x")
    assert as_key(k) is k
