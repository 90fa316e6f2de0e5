"""Datastore keys, with go-datastore's rules.

Theory of operation: a Key is a cleaned, slash-separated path such as
``/Comedy/MontyPython/Actor:JohnCleese``. ``Key(s)`` cleans its input the way
Go's ``path.Clean`` does (after prefixing "/"), so ``Key("a//b/../c/")`` is
``/a/c``; ``Key.raw(s)`` trusts a string that is already clean and only checks
its two ends. Every other operation (parent, child, ancestry, ordering) works
on the cleaned string, so two keys are equal exactly when their strings are.

Ordering follows go-datastore's ``Key.Less``: namespaces are compared one by
one, and a key sorts before its descendants.  This differs from plain string
order ("/a/b" < "/a-b" by namespaces, but "/a-b" < "/a/b" as strings).
"""

from __future__ import annotations

import functools

from dscluster.errors import BadKeyError

__all__ = ["Key", "as_key", "clean_path", "is_clean", "namespace_type", "namespace_value"]


def clean_path(s: str) -> str:
    """Go's ``path.Clean("/" + s)``: a rooted path with no "//", "." or ".." and no trailing "/"."""
    parts: list[str] = []
    for part in s.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:  # ".." at the root stays at the root, as in Go
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def is_clean(s: str) -> bool:
    """Whether ``clean_path(s) == s``, in a few substring scans rather than a split and join.

    A rooted string with no empty, "." or ".." element is already clean; every
    such element shows up as "//", "/." or a trailing "/" (names that merely
    start with "." fall to the full cleaning, which keeps them).
    """
    return s[:1] == "/" and "//" not in s and "/." not in s and (s[-1] != "/" or s == "/")


def namespace_type(namespace: str) -> str:
    """``"Actor"`` from ``"Actor:JohnCleese"``; ``""`` when there is no ":"."""
    head, sep, _ = namespace.rpartition(":")
    return head if sep else ""


def namespace_value(namespace: str) -> str:
    """``"JohnCleese"`` from ``"Actor:JohnCleese"``; the whole namespace when there is no ":"."""
    return namespace.rpartition(":")[2]


def _require_str(s: object) -> str:
    if not isinstance(s, str):
        raise BadKeyError(f"a key must be a str, not {type(s).__name__}")
    return s


@functools.total_ordering
class Key:
    """An immutable, hashable, cleaned datastore key."""

    __slots__ = ("_s",)
    _s: str

    def __init__(self, s: str | Key = "") -> None:
        if isinstance(s, Key):
            _set_s(self, s._s)
            return
        s = _require_str(s)
        _set_s(self, s if is_clean(s) else clean_path(s))

    @classmethod
    def raw(cls, s: str) -> Key:
        """A key from a string that is already clean; only its ends are checked."""
        s = _require_str(s)
        if not s.startswith("/") or (len(s) > 1 and s.endswith("/")):
            raise BadKeyError(f"raw key must start with '/' and not end with '/': {s!r}")
        key = object.__new__(cls)
        _set_s(key, s)
        return key

    @classmethod
    def with_namespaces(cls, namespaces: list[str] | tuple[str, ...]) -> Key:
        return cls("/".join(_require_str(n) for n in namespaces))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Key is immutable")

    # -- identity -----------------------------------------------------------

    def __str__(self) -> str:
        return self._s

    def __repr__(self) -> str:
        return f"Key({self._s!r})"

    def __hash__(self) -> int:
        return hash(self._s)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Key):
            return self._s == other._s
        return NotImplemented

    def __lt__(self, other: Key) -> bool:
        if not isinstance(other, Key):
            return NotImplemented
        # Go compares List() element-wise; Python's list comparison is the same
        # rule (shorter list first when one is a prefix of the other).
        return self.namespaces() < other.namespaces()

    def bytes(self) -> bytes:
        return self._s.encode()

    # -- structure ----------------------------------------------------------

    def namespaces(self) -> list[str]:
        """The path elements; the root key has one empty namespace, as in Go."""
        return self._s.split("/")[1:]

    list = namespaces

    def reverse(self) -> Key:
        return Key.with_namespaces(self.namespaces()[::-1])

    def base_namespace(self) -> str:
        return self.namespaces()[-1]

    def type(self) -> str:
        return namespace_type(self.base_namespace())

    def name(self) -> str:
        return namespace_value(self.base_namespace())

    def instance(self, s: str) -> Key:
        return Key(self._s + ":" + _require_str(s))

    def path(self) -> Key:
        return Key(self.parent()._s + "/" + namespace_type(self.base_namespace()))

    def parent(self) -> Key:
        n = self.namespaces()
        if len(n) == 1:
            return Key.raw("/")
        return Key("/".join(n[:-1]))

    def child(self, other: Key) -> Key:
        if not isinstance(other, Key):
            raise BadKeyError(f"child() takes a Key, not {type(other).__name__}")
        if self._s == "/":
            return other
        if other._s == "/":
            return self
        return Key.raw(self._s + other._s)

    def child_string(self, s: str) -> Key:
        return Key(self._s + "/" + _require_str(s))

    def is_ancestor_of(self, other: Key) -> bool:
        """True when ``other`` lies strictly below this key on a path boundary."""
        if len(other._s) <= len(self._s):
            return False
        if self._s == "/":
            return True
        return other._s.startswith(self._s) and other._s[len(self._s)] == "/"

    def is_descendant_of(self, other: Key) -> bool:
        return other.is_ancestor_of(self)

    def is_top_level(self) -> bool:
        return len(self.namespaces()) == 1


# Keys are made on every datastore call: the slot's own setter is the cheapest
# way past Key.__setattr__ (which forbids mutation), and as_key skips __init__.
_set_s = Key._s.__set__  # type: ignore[attr-defined,misc]
_new_key = object.__new__


def as_key(key: object) -> Key:
    """A Key from a Key or a str (cleaned); anything else is a BadKeyError."""
    if type(key) is str:  # the common case, first and without Key.__init__
        k = _new_key(Key)
        _set_s(k, key if is_clean(key) else clean_path(key))
        return k
    if isinstance(key, Key):
        return key
    if isinstance(key, str):
        return Key(key)
    raise BadKeyError(f"a key must be a Key or a str, not {type(key).__name__}")
