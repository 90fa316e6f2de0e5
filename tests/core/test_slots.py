import pytest
from hypothesis import given
from hypothesis import strategies as st

from dscluster.core.slots import (
    SLOT_COUNT,
    SlotSet,
    crc16,
    initial_ranges,
    key_slot,
    normalize_ranges,
)


def test_crc16_vectors() -> None:
    assert crc16(b"123456789") == 0xB4C8
    assert crc16(b"test-key") == 12197
    assert crc16(b"alice") == 41027


def test_key_slot_vectors() -> None:
    assert key_slot("/foo") == 3194
    assert key_slot(b"/foo") == 3194
    assert key_slot("/") == 8961


def test_initial_ranges_vectors() -> None:
    assert initial_ranges(3) == [(0, 5460), (5461, 10922), (10923, 16383)]
    assert initial_ranges(5) == [
        (0, 3276), (3277, 6553), (6554, 9829), (9830, 13106), (13107, 16383)
    ]
    assert initial_ranges(7) == [
        (0, 2340), (2341, 4680), (4681, 7021), (7022, 9361),
        (9362, 11702), (11703, 14042), (14043, 16383),
    ]


@pytest.mark.parametrize("n", range(1, 65))
def test_initial_ranges_cover_contiguously(n: int) -> None:
    ranges = initial_ranges(n)
    assert len(ranges) == n
    assert ranges[0][0] == 0 and ranges[-1][1] == SLOT_COUNT - 1
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert start == end + 1
    sizes = [end - start + 1 for start, end in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_initial_ranges_rejects_bad_counts() -> None:
    with pytest.raises(ValueError):
        initial_ranges(0)


def test_normalize_merges_adjacent_and_rejects_garbage() -> None:
    assert normalize_ranges([(5, 9), (0, 4), (20, 20), (8, 12)]) == ((0, 12), (20, 20))
    for bad in [(3, 2), (-1, 4), (0, SLOT_COUNT)]:
        with pytest.raises(ValueError):
            normalize_ranges([bad])


@given(st.sets(st.integers(0, SLOT_COUNT - 1), max_size=200))
def test_slotset_round_trips(slots: set[int]) -> None:
    ss = SlotSet.from_slots(slots)
    assert set(ss) == slots and len(ss) == len(slots)
    assert all(s in ss for s in slots)
    assert SlotSet.of(ss.ranges) == ss
    assert set(ss - SlotSet.from_slots(list(slots)[:5])) == slots - set(list(slots)[:5])
