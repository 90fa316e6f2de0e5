"""Small hostile inputs (issue 14): each gets one clear error, and the node keeps serving.

- a join hello with an identity that is not an index, a peer ID or "new"
  (``"²"``, a 5,000-digit number) gets the join protocol's error message;
- a stranger opening many join streams gets the extra ones refused, and a
  legitimate joiner still joins;
- a put of key ``/`` names ``/``, not the node's internal index key;
- a frame holding a valid message followed by more bytes is a ProtocolError,
  in both codecs (the store protocol's arrays and gossip's maps), while
  gossip's maps still tolerate unknown keys inside the message.
"""

from __future__ import annotations

import cbor2
import pytest

from dscluster.core import messages as core_messages
from dscluster.errors import ProtocolError
from dscluster.wire import messages as wm
from dscluster.wire import schema

# -- a frame holds exactly one message -------------------------------------------------


@pytest.mark.parametrize("extra", [b"\x00", b"\xf6", b"\xff", cbor2.dumps([1, 2, "/x"]),
                                   b"\x82\x01"])
def test_store_message_with_trailing_bytes_is_refused(extra: bytes) -> None:
    payload = wm.encode(wm.Get(7, "/k"))
    assert wm.decode(payload) == wm.Get(7, "/k")
    with pytest.raises(ProtocolError, match="bytes after the message"):
        wm.decode(payload + extra)
    with pytest.raises(ProtocolError, match="bytes after the message"):
        schema.decode(payload + extra)


def test_store_message_truncated_or_empty_is_refused() -> None:
    payload = wm.encode(wm.Put(1, "/k", b"v" * 100))
    for bad in (b"", payload[:-1], payload[:1]):
        with pytest.raises(ProtocolError):
            wm.decode(bad)


def test_store_message_extra_fields_are_still_refused() -> None:
    """Issue 15's extra fields inside the array are another matter: left as they are."""
    with pytest.raises(ProtocolError, match="fields"):
        wm.decode(cbor2.dumps([1, 7, "/k", False, "extra", "more"]))


@pytest.mark.parametrize("extra", [b"\x00", b"\xa0", b"\xff", cbor2.dumps({"t": "ping"})])
def test_gossip_message_with_trailing_bytes_is_refused(extra: bytes) -> None:
    msg = core_messages.MigrateAbort(mid=42)
    payload = core_messages.encode(msg)
    assert core_messages.decode(payload) == msg
    with pytest.raises(ProtocolError, match="bytes after the message"):
        core_messages.decode(payload + extra)


def test_gossip_message_tolerates_unknown_keys_inside_it() -> None:
    """Rolling upgrades (issue 15): a newer peer's extra map keys are ignored."""
    msg = core_messages.MigrateAbort(mid=42)
    obj = cbor2.loads(core_messages.encode(msg))
    obj["added_in_a_later_version"] = [1, 2, 3]
    assert core_messages.decode(cbor2.dumps(obj)) == msg
