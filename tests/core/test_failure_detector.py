"""The failure detector's startup grace and a node's report of itself (core/gossip.py)."""

from dscluster.core.gossip import DAEMON_GOSSIP, FailureDetector, GossipConfig, Liveness


def test_a_member_never_heard_from_gets_the_startup_grace_then_is_suspected() -> None:
    cfg = GossipConfig(pfail_ticks=5, startup_grace_ticks=20)
    fd = FailureDetector("A", cfg)
    fd.watch(["A", "B", "C"])
    for _ in range(24):
        fd.tick()
    assert fd.liveness("B") is Liveness.UP  # still starting, maybe
    fd.heard_from("C")
    for _ in range(2):
        fd.tick()
    assert fd.liveness("B") is Liveness.PFAIL and fd.suspects() == ("B",)
    for _ in range(5):
        fd.tick()
    assert fd.liveness("C") is Liveness.PFAIL  # heard once: no grace any more
    assert DAEMON_GOSSIP.startup_grace_ticks > 0 == GossipConfig().startup_grace_ticks


def test_a_node_that_reports_itself_failed_is_fail_while_it_says_so() -> None:
    fd = FailureDetector("A", GossipConfig())
    fd.watch(["A", "B"])
    fd.heard_from("B")
    fd.on_report("B", (), ("B",))
    assert fd.liveness("B") is Liveness.FAIL and fd.failed() == ("B",)
    fd.heard_from("B")  # heard from, and still FAIL: its own word
    assert fd.liveness("B") is Liveness.FAIL
    fd.on_report("B", (), ())
    assert fd.liveness("B") is Liveness.UP
    fd.on_report("X", (), ("X",))  # a stranger's self-report is nothing
    assert fd.failed() == ()
