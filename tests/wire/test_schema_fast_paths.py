"""The schema's fast paths (plain arrays, unions decoded by CBOR type) keep every check."""

from __future__ import annotations

import cbor2
import pytest

from dscluster.errors import ProtocolError
from dscluster.wire import messages as wm
from dscluster.wire.schema import decode


def _ok_many(results: list[object]) -> wm.Message:
    return decode(cbor2.dumps([wm.OkMany.TAG, 7, results]))


def test_ok_many_items_keep_their_exact_types() -> None:
    msg = _ok_many([b"v", True, 5, None, False, 0])
    assert isinstance(msg, wm.OkMany)
    assert msg.results == (b"v", True, 5, None, False, 0)
    assert [type(r) for r in msg.results] == [bytes, bool, int, type(None), bool, int]


def test_ok_many_error_item_is_a_struct() -> None:
    msg = _ok_many([[wm.ErrorCode.NOT_FOUND.value, "gone"]])
    assert isinstance(msg, wm.OkMany)
    item = msg.results[0]
    assert isinstance(item, wm.ErrorInfo) and item.code is wm.ErrorCode.NOT_FOUND


@pytest.mark.parametrize("bad", [1.5, "text", 2**64, [], [1, 2, 3, 4, 5, 6, 7]])
def test_ok_many_item_no_alternative_holds_is_refused(bad: object) -> None:
    with pytest.raises(ProtocolError):
        _ok_many([bad])


def test_batch_round_trips_and_refuses_bad_pairs() -> None:
    batch = wm.Batch(3, (("/a", b"1"), ("/b", b"")), ("/c",))
    assert decode(batch.encode()) == batch
    for bad_pair in (["/a"], ["/a", b"1", b"2"], [b"/a", b"1"], ["/a", "1"]):
        with pytest.raises(ProtocolError):
            decode(cbor2.dumps([wm.Batch.TAG, 3, [bad_pair], [], False]))


def test_plain_arrays_encode_as_lists_would() -> None:
    batch = wm.Batch(1, (("/k", b"v"),), ("/d",))
    assert batch.encode() == cbor2.dumps([wm.Batch.TAG, 1, [["/k", b"v"]], ["/d"], False])
