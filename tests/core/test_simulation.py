"""The deterministic simulator: 200 seeded worlds with faults, and a broken core caught."""

import logging

import pytest

from dscluster.core import routing
from dscluster.testing.simulate import InvariantViolation, World, main, outcomes, run_seed

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


def test_seed_10433_a_source_in_handoff_finishes_after_the_target_moved_slots_on() -> None:
    """The target claimed the slots and moved some on before the source heard its
    claims; it ignores the late Handoff, so the source must finish on seeing that no
    slot is its own any more (it used to wait for `owner == target` forever)."""
    world = run_seed(10433)
    assert not any(n.core.migrations for n in world.nodes.values() if n.core)


@pytest.mark.slow
def test_two_thousand_more_seeds_with_the_full_fault_phase() -> None:
    for seed in range(SEEDS, SEEDS + 2000):
        run_seed(seed)


def test_a_pool_of_workers_gives_the_same_outcomes_in_seed_order(
        capsys: pytest.CaptureFixture[str]) -> None:
    """--jobs 2 runs seeds in worker processes; results match the in-process run, seed by seed."""
    pooled = list(outcomes(range(30, 34), jobs=2, verbose=False))
    alone = list(outcomes(range(30, 34), jobs=1, verbose=False))
    assert [o.seed for o in pooled] == [30, 31, 32, 33]
    assert pooled == alone
    assert main(["--seeds", "3", "--start", "30", "--jobs", "2", "--progress", "0"]) == 0
    out, err = capsys.readouterr()
    assert "3 seeds passed" in out and "2 jobs" in out
    assert "simulate: 1/3 seeds" in err and "0 failed" in err  # progress goes to stderr


def test_a_failing_seed_stops_the_run_with_its_replay_command(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def serve_everything(me, slot, owner, migrating_to, importing_from, *, exists_locally,
                         asking):
        return routing.Serve()  # every node serves every key: two servers at once

    monkeypatch.setattr("dscluster.core.node.decide", serve_everything)
    assert main(["--seeds", "5", "--start", "11", "--jobs", "1", "--progress", "0"]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("seed 11 FAILED: seed 11: ")
    assert "served by" in out
    assert "replay: python -m dscluster.testing.simulate --start 11 --seeds 1 --verbose" in out
    assert "seeds passed" not in out
