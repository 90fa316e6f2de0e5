"""Every fuzz target (dscluster/testing/fuzz.py) takes a short run of hostile input:
its decoder raises only DSClusterError (a crash would propagate). `make fuzz` runs
them for minutes; this keeps each one working in the default run."""

import pytest

from dscluster.testing import fuzz


@pytest.mark.parametrize("target", fuzz.TARGETS, ids=[t.name for t in fuzz.TARGETS])
def test_each_fuzz_target_survives_a_short_run(target: fuzz.Target) -> None:
    assert fuzz.run_target(target, max_examples=20) > 0


def test_core_messages_are_fuzzed_as_tagged_arrays_of_every_core_tag() -> None:
    from hypothesis import given, settings

    from dscluster.core.messages import MESSAGE_TYPES

    seen: set[int] = set()

    @settings(max_examples=100, deadline=None, database=None)
    @given(fuzz._core_arrays())
    def collect(data: bytes) -> None:
        import cbor2

        seen.add(cbor2.loads(data)[0])

    collect()
    assert seen <= set(MESSAGE_TYPES) and len(seen) > len(MESSAGE_TYPES) // 2
