"""Copy-set changes by majority (core/election.py): one vote per epoch, one chain."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dscluster.core.election import (
    NO_CONFIG,
    Accepted,
    Acceptor,
    Config,
    Election,
    Kind,
    Outcome,
    Propose,
    Vote,
    VoteRequest,
    derive,
)
from dscluster.core.slots import SlotSet
from dscluster.errors import BadRequestError

MEMBERS = ["P", "R1", "R2", "X", "Y"]
SLOTS = SlotSet.of([(0, 1)])
BASE = Config(3, ("P", "R1", "R2"))


def table_of(configs: dict[int, Config]):
    return lambda slot: configs.get(slot, NO_CONFIG)


def run(election: Election, acceptors: dict[str, Acceptor], table, failed=("P",)) -> None:
    """Deliver everything at once, in member order (the happy path)."""
    proposal = None
    for name in sorted(acceptors):
        vote = acceptors[name].on_vote_request(election.request(), table, failed)
        proposal = election.on_vote(vote) or proposal
    if proposal is not None:
        for name in sorted(acceptors):
            election.on_accepted(acceptors[name].on_propose(proposal))


def test_a_replica_fails_over_with_a_majority() -> None:
    acceptors = {m: Acceptor(m) for m in MEMBERS[:3]}
    e = Election("R1", 4, Kind.FAILOVER, "P", SLOTS, MEMBERS[:3])
    run(e, acceptors, table_of({0: BASE, 1: BASE}))
    assert e.outcome is Outcome.WON
    assert e.won() == ((0, 1, Config(4, ("R1", "R2"))),)
    assert all(a.promised == 4 for a in acceptors.values())


def test_one_vote_per_epoch() -> None:
    a = Acceptor("X")
    table = table_of({0: BASE})
    req = VoteRequest(5, "R1", Kind.FAILOVER, "P", SlotSet.of([(0, 0)]))
    assert a.on_vote_request(req, table, ["P"]).granted
    assert not a.on_vote_request(req, table, ["P"]).granted  # not even the same candidate
    other = VoteRequest(5, "R2", Kind.FAILOVER, "P", SlotSet.of([(0, 0)]))
    assert a.on_vote_request(other, table, ["P"]) == Vote(5, "X", False, (), 5)
    assert not a.on_vote_request(VoteRequest(4, "R2", Kind.FAILOVER, "P", SLOTS), table, ["P"]).granted
    assert a.on_vote_request(VoteRequest(6, "R2", Kind.FAILOVER, "P", SLOTS), table, ["P"]).granted


def test_no_failover_vote_while_the_primary_is_not_fail_here() -> None:
    a = Acceptor("X")
    req = VoteRequest(5, "R1", Kind.FAILOVER, "P", SLOTS)
    assert not a.on_vote_request(req, table_of({}), failed=["R2"]).granted
    assert a.promised == 0  # a refusal promises nothing
    assert a.on_vote_request(req, table_of({}), failed=["P"]).granted


def test_a_stale_replica_cannot_take_over_after_a_committed_shrink() -> None:
    """P drops R2 (committed by P, R1, X); R2, who never heard, then asks for the slots."""
    acceptors = {m: Acceptor(m) for m in MEMBERS}
    table = table_of({0: BASE, 1: BASE})
    shrink = Election("P", 4, Kind.SHRINK, "R2", SLOTS, MEMBERS)
    proposal = None
    for m in ("P", "R1", "X"):
        proposal = shrink.on_vote(acceptors[m].on_vote_request(shrink.request(), table, [])) \
            or proposal
    assert isinstance(proposal, Propose)
    for m in ("P", "R1", "X"):
        shrink.on_accepted(acceptors[m].on_propose(proposal))
    assert shrink.outcome is Outcome.WON and shrink.won()[0][2] == Config(4, ("P", "R1"))
    # nobody's table has the shrink yet; P is now FAIL everywhere; R2 stands at epoch 5
    stale = Election("R2", 5, Kind.FAILOVER, "P", SLOTS, MEMBERS)
    for m in ("R2", "X", "Y"):  # any majority includes one of the shrink's acceptors
        stale.on_vote(acceptors[m].on_vote_request(stale.request(), table, ["P"]))
    assert stale.outcome is Outcome.LOST and stale.proposal == {}
    # R1, in sync in the shrunk set, can
    fresh = Election("R1", 6, Kind.FAILOVER, "P", SLOTS, MEMBERS)
    run(fresh, acceptors, table)
    assert fresh.outcome is Outcome.WON and fresh.won()[0][2] == Config(6, ("R1",))


def test_refusals_end_the_election_once_no_majority_is_left() -> None:
    e = Election("R1", 4, Kind.FAILOVER, "P", SLOTS, MEMBERS[:3])
    assert e.on_vote(Vote(4, "P", False, (), 9)) is None and e.outcome is Outcome.VOTING
    assert e.on_vote(Vote(3, "R2", True)) is None  # another epoch: ignored
    assert e.on_vote(Vote(4, "Z", True)) is None  # not a member: ignored
    e.on_vote(Vote(4, "R2", False, (), 7))
    assert e.outcome is Outcome.LOST and e.highest_promise == 9
    with pytest.raises(BadRequestError):
        e.won()


def test_derive_rules() -> None:
    assert derive(Kind.FAILOVER, "R2", "P", BASE, 9) == Config(9, ("R2", "R1"))
    assert derive(Kind.FAILOVER, "X", "P", BASE, 9) is None  # not in sync
    assert derive(Kind.FAILOVER, "R1", "R2", BASE, 9) is None  # R2 is not the primary
    assert derive(Kind.SHRINK, "P", "R1", BASE, 9) == Config(9, ("P", "R2"))
    assert derive(Kind.SHRINK, "R1", "R2", BASE, 9) is None  # only the primary shrinks
    assert derive(Kind.GROW, "P", "X", BASE, 9) == Config(9, ("P", "R1", "R2", "X"))
    assert derive(Kind.GROW, "R1", "X", BASE, 9) is None  # only the primary grows
    # An earlier try of the same change, accepted but never seen committed: again.
    taken = Config(5, ("R1", "R2"))
    assert derive(Kind.FAILOVER, "R1", "P", taken, 9) == Config(9, ("R1", "R2"))
    assert derive(Kind.SHRINK, "P", "R1", Config(5, ("P", "R2")), 9) == Config(9, ("P", "R2"))
    assert derive(Kind.FAILOVER, "R2", "P", taken, 9) is None  # another's win: not ours
    # A handover: an in-sync copy becomes primary, the old one goes last.
    assert derive(Kind.HANDOVER, "P", "R1", BASE, 9) == Config(9, ("R1", "R2", "P"))
    assert derive(Kind.HANDOVER, "P", "X", BASE, 9) is None  # not a copy
    assert derive(Kind.HANDOVER, "R1", "R2", BASE, 9) is None  # only the primary
    handed = Config(5, ("R1", "R2", "P"))  # done, its commit unseen: the same again
    assert derive(Kind.HANDOVER, "P", "R1", handed, 9) == Config(9, handed.copies)
    # A renew: the same copies at the new epoch, by the primary only.
    assert derive(Kind.RENEW, "P", "P", BASE, 9) == Config(9, BASE.copies)
    assert derive(Kind.RENEW, "R1", "R1", BASE, 9) is None
    # A grow whose copy is in the set already: that set again, never a copy twice.
    assert derive(Kind.GROW, "P", "R1", BASE, 9) == Config(9, BASE.copies)


def test_a_candidate_whose_acceptance_was_lost_wins_the_same_change_next_time() -> None:
    members = ["P", "R1", "R2"]
    voter = Acceptor("R2")
    table = table_of({0: BASE, 1: BASE})
    first = Election("R1", 4, Kind.FAILOVER, "P", SLOTS, members)
    mine = Acceptor("R1")
    first.on_vote(mine.on_vote_request(first.request(), table, ["P"]))
    proposal = first.on_vote(voter.on_vote_request(first.request(), table, ["P"]))
    assert proposal is not None
    mine.on_propose(proposal)
    voter.on_propose(proposal)  # accepted, but its Accepted never reaches R1
    again = Election("R1", 5, Kind.FAILOVER, "P", SLOTS, members)
    again.on_vote(mine.on_vote_request(again.request(), table, ["P"]))
    retry = again.on_vote(voter.on_vote_request(again.request(), table, ["P"]))
    assert retry is not None, "the base now names R1 primary: it must propose that again"
    again.on_accepted(mine.on_propose(retry))
    assert again.on_accepted(voter.on_propose(retry))
    assert again.won() == ((0, 1, Config(5, ("R1", "R2"))),)
    with pytest.raises(BadRequestError):
        Election("P", 1, Kind.FAILOVER, "P", SLOTS, MEMBERS)


# -- many candidates, any message order ------------------------------------------------

change_st = st.sampled_from([("R1", Kind.FAILOVER, "P"), ("R2", Kind.FAILOVER, "P"),
                             ("P", Kind.SHRINK, "R2"), ("P", Kind.SHRINK, "R1"),
                             ("P", Kind.GROW, "X"), ("R1", Kind.FAILOVER, "R2"),
                             ("R2", Kind.FAILOVER, "R1"), ("X", Kind.FAILOVER, "P"),
                             ("P", Kind.RENEW, "P"), ("R1", Kind.RENEW, "R1"),
                             ("P", Kind.HANDOVER, "R1"), ("P", Kind.HANDOVER, "R2")])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([3, 5]),
       st.lists(st.tuples(change_st, st.integers(4, 7)), min_size=2, max_size=6),
       st.randoms(use_true_random=False), st.floats(0, 0.3), st.floats(0, 0.2))
def test_two_candidates_never_both_win_an_epoch_and_winners_form_one_chain(
        n, changes, rnd: random.Random, drop: float, dup: float) -> None:
    members = MEMBERS[:n]
    acceptors = {m: Acceptor(m) for m in members}
    tables = {m: {0: BASE, 1: BASE} for m in members}  # committed configs, per member
    failed = {m: {"P", "R1", "R2"} if rnd.random() < 0.8 else set() for m in members}
    elections = [Election(c, e, kind, subj, SLOTS, members)
                 for (c, kind, subj), e in changes if c in members]
    pool: list[tuple[str, int, object]] = [(m, i, el.request())
                                           for i, el in enumerate(elections) for m in members]
    winners: list[Election] = []
    while pool:
        dest, i, msg = pool.pop(rnd.randrange(len(pool)))
        if rnd.random() < drop:
            continue
        if rnd.random() < dup:
            pool.append((dest, i, msg))
        el = elections[i]
        if isinstance(msg, VoteRequest):
            vote = acceptors[dest].on_vote_request(msg, lambda s, d=dest: tables[d].get(s, NO_CONFIG),
                                                   failed[dest])
            pool.append(("", i, vote))
        elif isinstance(msg, Propose):
            pool.append(("", i, acceptors[dest].on_propose(msg)))
        elif isinstance(msg, Vote):
            proposal = el.on_vote(msg)
            if proposal is not None:
                pool.extend((m, i, proposal) for m in members)
        elif isinstance(msg, Accepted) and el.on_accepted(msg):
            winners.append(el)
            for m in rnd.sample(members, rnd.randrange(n + 1)):  # gossip reaches some
                for start, end, c in el.won():
                    for s in range(start, end + 1):
                        tables[m][s] = max(tables[m].get(s, NO_CONFIG), c)
    epochs = [w.epoch for w in winners]
    assert len(epochs) == len(set(epochs)), "two candidates won one epoch"
    proposed = [el for el in elections if el.proposal]
    assert len({el.epoch for el in proposed}) == len(proposed), "two proposals at one epoch"
    for a in winners:
        for b in winners:
            if a.epoch < b.epoch:
                for slot, config in a.proposal.items():
                    if slot in b.bases:  # b built on a's config or on a later one
                        assert b.bases[slot] >= config, (a.proposal, b.bases)
    # the chain: a later winner descends from every earlier one through proposals' bases
    for a in winners:
        for b in winners:
            if a.epoch < b.epoch:
                for slot in set(a.proposal) & set(b.proposal):
                    assert _descends(b.proposal[slot], a.proposal[slot], proposed, slot)


def _descends(later: Config, earlier: Config, proposed: list[Election], slot: int) -> bool:
    """`later` is reached from `earlier` through the bases of proposals (won or not)."""
    by_epoch = {w.epoch: w for w in proposed}
    c = later
    while c.epoch > earlier.epoch:
        w = by_epoch.get(c.epoch)
        if w is None or slot not in w.bases:
            return False
        c = w.bases[slot]
    return c == earlier
