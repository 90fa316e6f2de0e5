"""Every decoder rejects garbage with the project's own errors, never a crash."""

import pytest

from dscluster.testing.fuzz import TARGETS, Target, run_target


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_decoder_raises_only_project_errors(target: Target) -> None:
    assert run_target(target, max_examples=100) > 0
