"""The deterministic simulator: 200 seeded worlds with faults, and a broken core caught."""

import logging

import pytest

from dscluster.core import routing
from dscluster.testing.simulate import InvariantViolation, World, run_seed

SEEDS = 200


@pytest.fixture(autouse=True)
def _quiet_cores(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)  # FAIL detections are expected in faulty worlds


@pytest.mark.parametrize("block", range(10))
def test_seeds(block: int) -> None:
    """Each block of 20 seeds passes every invariant, and really exercises the core."""
    per = SEEDS // 10
    totals: dict[str, int] = {}
    scenarios = set()
    for seed in range(block * per, (block + 1) * per):
        world = run_seed(seed, fault_steps=160)
        scenarios.add(world.scenario)
        for k, v in world.stats.items():
            totals[k] = totals.get(k, 0) + v
    assert scenarios == {"grow", "shrink", "shuffle"}
    assert totals["moves"] > 0 and totals["crashes"] > 0 and totals["migrations"] > per
    assert totals["acked"] > totals["ops"] // 4


def test_same_seed_same_trace() -> None:
    assert run_seed(7, fault_steps=80).trace == run_seed(7, fault_steps=80).trace


def test_a_broken_routing_rule_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Creating keys at a migrating source (ignoring ASK) must be detected."""
    real = routing.decide

    def sloppy(me, slot, owner, migrating_to, importing_from, *, exists_locally, asking):
        if owner == me:
            return routing.Serve()
        return real(me, slot, owner, migrating_to, importing_from,
                    exists_locally=exists_locally, asking=asking)

    monkeypatch.setattr("dscluster.core.node.decide", sloppy)
    with pytest.raises(InvariantViolation):
        for seed in range(40):
            World(seed, fault_steps=160).run()


@pytest.mark.slow
def test_two_thousand_more_seeds_with_the_full_fault_phase() -> None:
    for seed in range(SEEDS, SEEDS + 2000):
        run_seed(seed)
