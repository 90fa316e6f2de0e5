"""CBOR messages: round trips, strict validation, error mapping both ways."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dscluster import errors
from dscluster.datastore import query as dsq
from dscluster.wire import messages as m
from dscluster.wire.messages import ErrorCode, ErrorInfo, decode, encode
from dscluster.wire.schema import message, registered_tags

keys = st.text(max_size=40)
values = st.binary(max_size=64)
ids = st.integers(min_value=0, max_value=2**63 - 1)
error_infos = st.builds(
    ErrorInfo,
    st.sampled_from(list(ErrorCode)),
    st.text(max_size=20),
    st.none() | st.integers(0, 16383),
    st.none() | st.text(max_size=10),
    st.lists(st.text(max_size=10), max_size=3).map(tuple),
)
results = st.one_of(values, st.booleans(), st.integers(-(2**63), 2**63 - 1), st.none(), error_infos)
filters = st.one_of(
    st.builds(m.WireFilter, st.just("value"), st.sampled_from(list(m.FilterOp)), values),
    st.builds(m.WireFilter, st.just("key"), st.sampled_from(list(m.FilterOp)), keys),
    st.builds(m.WireFilter, st.just("prefix"), st.just(m.FilterOp.EQ), keys),
)
all_messages = st.one_of(
    st.builds(m.Get, ids, keys, st.booleans()),
    st.builds(m.Has, ids, keys, st.booleans()),
    st.builds(m.GetSize, ids, keys, st.booleans()),
    st.builds(m.Put, ids, keys, values, st.booleans()),
    st.builds(m.Delete, ids, keys, st.booleans()),
    st.builds(m.GetMany, ids, st.lists(keys, max_size=5).map(tuple), st.booleans()),
    st.builds(m.HasMany, ids, st.lists(keys, max_size=5).map(tuple)),
    st.builds(m.GetSizeMany, ids, st.lists(keys, max_size=5).map(tuple)),
    st.builds(
        m.Batch, ids, st.lists(st.tuples(keys, values), max_size=4).map(tuple),
        st.lists(keys, max_size=4).map(tuple), st.booleans(),
    ),
    st.builds(
        m.Query, ids, keys, st.lists(filters, max_size=3).map(tuple),
        st.lists(st.sampled_from(list(m.OrderBy)), max_size=2).map(tuple),
        st.integers(0, 100), st.integers(0, 100), st.booleans(), st.booleans(),
        st.integers(1, 5000),
    ),
    st.builds(m.QueryNext, ids),
    st.builds(m.Cancel, ids),
    st.builds(m.Info, ids),
    st.builds(m.Ok, ids, st.one_of(values, st.booleans(), st.integers(0, 2**40), st.none())),
    st.builds(m.Fail, ids, error_infos),
    st.builds(m.OkMany, ids, st.lists(results, max_size=5).map(tuple)),
    st.builds(
        m.QueryChunk, ids,
        st.lists(st.builds(m.QueryEntry, keys, st.none() | values, st.integers(-1, 10**6)),
                 max_size=4).map(tuple),
        st.booleans(),
    ),
    st.builds(
        m.NodeInfo, ids, st.text(max_size=52), st.lists(st.text(max_size=30), max_size=3).map(tuple),
        st.lists(st.tuples(st.integers(0, 16383), st.integers(0, 16383)), max_size=3).map(tuple),
        st.integers(0, 2**32), st.text(max_size=10),
    ),
)


@settings(max_examples=200)
@given(all_messages)
def test_every_message_round_trips(msg):
    assert decode(encode(msg)) == msg


@settings(max_examples=200)
@given(st.binary(max_size=100))
def test_random_bytes_raise_only_protocol_error(data):
    try:
        decode(data)
    except errors.ProtocolError:
        pass


# Arbitrary CBOR data, with the tag often a real one so validation is exercised.
cbor_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
              st.text(max_size=8), st.binary(max_size=8)),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=8,
)


@settings(max_examples=200)
@given(st.sampled_from(sorted(registered_tags())) | st.integers(), st.lists(cbor_values, max_size=9))
def test_wrong_shapes_raise_only_protocol_error(tag, fields):
    try:
        msg = decode(cbor2.dumps([tag, *fields]))
    except errors.ProtocolError:
        return
    assert decode(encode(msg)) == msg  # whatever decodes is a valid message


@settings(max_examples=200)
@given(all_messages, st.data())
def test_mutated_encodings_raise_only_protocol_error(msg, data):
    raw = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(raw))
    except errors.ProtocolError:
        pass


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([999, 1], "unknown message tag"),
        (["1", 1, "/k"], "unknown message tag"),
        ({"tag": 1}, "non-empty array"),
        ([], "non-empty array"),
        ([1, 1], "fields"),  # Get without its key
        ([1, True, "/k"], "64-bit int"),  # bool is not an id
        ([1, 2**64, "/k"], "64-bit int"),
        ([1, 1, b"/k"], "expected str"),
        ([1, 1, "/" + "k" * 4096], "longer than 4096"),
        ([4, 1, "/k", "not bytes"], "expected bytes"),
        ([33, 1, ["no_such_code", "x"]], "expected one of"),
        ([10, 1, "", [["value", "=", "str operand"]]], "operand"),
        ([10, 1, "", [], [], -1], "limit"),
        ([10, 1, "", [], ["sideways"]], "expected one of"),
    ],
)
def test_specific_garbage_is_named(raw, reason):
    with pytest.raises(errors.ProtocolError, match=reason):
        decode(cbor2.dumps(raw))


def test_trailing_defaults_may_be_omitted():
    assert decode(cbor2.dumps([1, 7, "/k"])) == m.Get(7, "/k", asking=False)


def test_duplicate_tag_is_refused():
    with pytest.raises(ValueError, match="already used"):
        message(1)(m.Get)


@pytest.mark.parametrize(
    "exc",
    [
        errors.NotFoundError("/k"),
        errors.UnauthorizedError("read-only client"),
        errors.BadKeyError("bad key"),
        errors.BadRequestError("bad query"),
        errors.UnavailableError("disk gone"),
        errors.FencedError("slot 3: this copy knows a newer configuration"),
        errors.MovedError(12, "QmPeer", ["/ip4/127.0.0.1/tcp/1"]),
        errors.AskError(13, "QmOther", []),
    ],
)
def test_errors_map_both_ways(exc):
    info = ErrorInfo.from_exception(exc)
    back = decode(encode(m.Fail(1, info))).error.to_exception()  # type: ignore[attr-defined]
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    if isinstance(exc, errors.MovedError | errors.AskError):
        assert (back.slot, back.peer_id, back.addrs) == (exc.slot, exc.peer_id, exc.addrs)


def test_unexpected_exception_is_internal_without_details():
    info = ErrorInfo.from_exception(RuntimeError("/secret/path failed"))
    assert info.code is ErrorCode.INTERNAL
    assert "secret" not in info.message
    assert isinstance(info.to_exception(), m.RemoteError)
    assert ErrorInfo.from_exception(errors.DatastoreClosedError("closed")).code is (
        ErrorCode.UNAVAILABLE
    )


def test_query_converts_to_and_from_the_datastore_query():
    q = dsq.Query(
        prefix="/blocks",
        filters=(dsq.FilterKeyPrefix("/blocks/A"), dsq.FilterKeyCompare(">", "/blocks/B"),
                 dsq.FilterValueCompare("!=", b"x")),
        orders=(dsq.OrderByValueDescending(), dsq.OrderByKey()),
        limit=5, offset=2, keys_only=True, returns_sizes=True,
    )
    req = decode(encode(m.Query.from_query(9, q, chunk_size=10)))
    assert isinstance(req, m.Query) and req.chunk_size == 10
    back = req.to_query()
    assert (back.prefix, back.limit, back.offset, back.keys_only, back.returns_sizes) == (
        "/blocks", 5, 2, True, True)
    assert [type(f) for f in back.filters] == [type(f) for f in q.filters]
    assert [type(o) for o in back.orders] == [type(o) for o in q.orders]
    assert back.filters[1].key == "/blocks/B" and back.filters[2].value == b"x"
