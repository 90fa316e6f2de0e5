"""The slot table: who owns each slot, at which epoch, and who is a member.

Theory of operation
-------------------
Every slot carries a *claim* ``(epoch, owner)``. Claims are totally ordered as
tuples: the higher epoch wins and, at equal epochs, the greater owner peer ID
wins. Merging two views of the table is therefore a per-slot ``max`` — a
join-semilattice, so merge is commutative, associative and idempotent, and any
order of gossip delivery converges to the same table (tests prove it with
hypothesis). A claim is only ever *made* by a node taking ownership of slots
(the end of a migration) with an epoch higher than any it has seen, so in a
healthy cluster equal-epoch conflicts do not arise; if they do (two nodes were
bootstrapped with clashing configs), the tie-break picks one winner everywhere
and the loser learns it lost (`MergeResult.lost`) and bumps its epoch, as
Redis does on a configEpoch collision.

Membership is merged the same way: each `NodeInfo` carries a version and the
greater ``(version, role, addrs)`` wins. A node is added at version 1 and
retired by re-publishing it with a higher version and role RETIRED.

Client roles (who else may use the cluster, and how) are table state too: one
`ClientInfo(id, role, version)` per client peer, merged per peer by the greater
``(version, rank)``. Revoking a role publishes a *tombstone*, an entry with
role NONE and a higher version, so a removal spreads like a grant and a node
that missed both learns the outcome, never the stale grant. At equal versions
the weaker role wins (NONE > read-only > read-write > admin in the tie-break),
so two concurrent edits that picked the same version settle on the safer one
everywhere. Versions are chosen by whoever makes the change (`next_version`):
above the entry it replaces and, given the caller's clock, not below the
current time in milliseconds, so an edit made later wins over older ones even
when its maker had not heard of them. The core never reads a clock: the
caller passes it in. Members are not clients: their role is MEMBER by
`nodes`, whatever `clients` says.

Copy sets. A slot's full entry is ``(epoch, owner, replicas)``: its *copy
set* is ``(owner, *replicas)``, primary first, every node at most once. The
merge order is the tuple order of the entry, with ``()`` (no replicas) the
least replica tuple, so a claim without replicas (all a node that predates
copies ever sends) never lowers an entry that has them, and merge stays a
per-slot max. Every change of a copy set is made with a fresh epoch
(doc/copies.md); replicas are stored sparsely, so a table with no replicas is
exactly the table of before, byte for byte in its digests and CBOR. The
cluster setting ``copies`` (how many copies each slot should have) is a
`ClusterSettings(copies, version)`, merged by the greater ``(version,
copies)``; default ``copies=1`` at version 0 (go-ds-cluster's behaviour).

Liveness is not in the table: it is each observer's opinion, kept by the
failure detector (gossip.py).

For cheap gossip the 16384 slots are grouped in 64 buckets of 256; a digest is
one short hash per bucket plus one for the membership and one for the client
roles (empty bytes when there are none, as a node that predates roles sends),
and peers exchange only the buckets whose hashes differ, plus the whole
membership or the whole set of roles when that hash differs. A bucket's hash
covers its replicas and the membership hash covers non-default settings, so
views that differ only there are seen to differ.

The table's serialization is CBOR (`to_cbor`/`from_cbor`, for the wire and for
the persisted state; a table without "clients" decodes as no roles, one
without "replicas" or "settings" as no replicas and copies 1); its decoders
raise only ProtocolError. The config.json form of the table, which
raises ConfigError, belongs to the config layer (dscluster/tableconfig.py).
"""

from __future__ import annotations

import enum
import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import cbor2

from dscluster.core.slots import SLOT_COUNT, SlotSet, initial_ranges
from dscluster.errors import ProtocolError

Claim = tuple[int, str]  # (epoch, owner peer ID); compared as a tuple
UNKNOWN: Claim = (-1, "")  # loses to every real claim
Run = tuple[int, int, int, str]  # (start, end, epoch, owner): consecutive equal claims
Entry = tuple[int, str, tuple[str, ...]]  # (epoch, owner, replicas): a slot's full entry
# (start, end, epoch, owner, replicas): consecutive equal entries
CopyRun = tuple[int, int, int, str, tuple[str, ...]]
MAX_COPIES = 16  # a sanity bound on the setting and on a copy set's length
DEFAULT_COPIES = 2  # a new cluster of two or more nodes survives a dead node or disk


def default_copies(nodes: int) -> int:
    """The copies a new cluster of ``nodes`` gets unless told otherwise."""
    return max(1, min(nodes, DEFAULT_COPIES))

BUCKET_SIZE = 256
BUCKET_COUNT = SLOT_COUNT // BUCKET_SIZE


class NodeRole(enum.Enum):
    DATA = "data"  # stores data and may own slots (a joining node owns none yet)
    RETIRED = "retired"  # left the cluster; owns nothing, takes no part in votes


_ROLE_RANK = {NodeRole.DATA: 0, NodeRole.RETIRED: 1}


class ClientRole(enum.Enum):
    """A client peer's role in the table; NONE is the tombstone of a revoked role."""

    NONE = "none"
    READ_ONLY = "read-only"
    READ_WRITE = "read-write"
    ADMIN = "admin"


# The tie-break at equal versions: the weaker role wins, a tombstone beats every grant.
_CLIENT_RANK = {ClientRole.ADMIN: 0, ClientRole.READ_WRITE: 1, ClientRole.READ_ONLY: 2,
                ClientRole.NONE: 3}
MAX_PEER_ID = 128  # characters; a peer ID in base58 is about 52


@dataclass(frozen=True)
class NodeInfo:
    id: str
    addrs: tuple[str, ...] = ()
    role: NodeRole = NodeRole.DATA
    version: int = 0

    def order_key(self) -> tuple[int, int, tuple[str, ...]]:
        return (self.version, _ROLE_RANK[self.role], self.addrs)

    def to_obj(self) -> dict[str, Any]:
        return {"id": self.id, "addrs": list(self.addrs), "role": self.role.value,
                "version": self.version}

    @classmethod
    def from_obj(cls, obj: Any) -> NodeInfo:
        """Decode a wire node entry; raises ProtocolError on garbage."""
        try:
            if not isinstance(obj, dict):
                raise TypeError("node entry is not a map")
            node_id, addrs, version = obj["id"], obj["addrs"], obj["version"]
            if not isinstance(node_id, str) or not node_id:
                raise TypeError("node id must be a non-empty string")
            if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
                raise TypeError("addrs must be a list of strings")
            if type(version) is not int or version < 0:
                raise TypeError("version must be a non-negative integer")
            return cls(node_id, tuple(addrs), NodeRole(obj["role"]), version)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"bad node entry: {exc}") from exc


@dataclass(frozen=True)
class ClientInfo:
    """One client's role at a version; the greater `order_key` wins a merge."""

    id: str
    role: ClientRole
    version: int

    def order_key(self) -> tuple[int, int]:
        return (self.version, _CLIENT_RANK[self.role])

    def to_obj(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role.value, "version": self.version}

    @classmethod
    def from_obj(cls, obj: Any) -> ClientInfo:
        """Decode a wire client entry; raises ProtocolError on garbage."""
        try:
            if not isinstance(obj, dict):
                raise TypeError("client entry is not a map")
            client_id, version = obj["id"], obj["version"]
            if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_PEER_ID:
                raise TypeError("client id must be a non-empty string of at most "
                                f"{MAX_PEER_ID} characters")
            if type(version) is not int or version < 0:
                raise TypeError("version must be a non-negative integer")
            return cls(client_id, ClientRole(obj["role"]), version)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"bad client entry: {exc}") from exc


def next_version(old: ClientInfo | None, now_ms: int = 0) -> int:
    """The version of a new entry replacing `old`: above it, and not below `now_ms`."""
    return max(old.version + 1 if old is not None else 1, now_ms)


@dataclass(frozen=True)
class ClusterSettings:
    """Cluster-wide settings in the table; the greater `order_key` wins a merge."""

    copies: int = 1  # copies each slot should have, the primary included
    version: int = 0  # 0: from a config file (loses to every real change)

    def __post_init__(self) -> None:
        if type(self.copies) is not int or not 1 <= self.copies <= MAX_COPIES:
            raise ValueError(f"copies must be an integer from 1 to {MAX_COPIES}")
        if type(self.version) is not int or self.version < 0:
            raise ValueError("settings version must be a non-negative integer")

    def order_key(self) -> tuple[int, int]:
        return (self.version, self.copies)  # at equal versions more copies win (safer)

    def to_obj(self) -> dict[str, int]:
        return {"copies": self.copies, "version": self.version}

    @classmethod
    def from_obj(cls, obj: Any) -> ClusterSettings:
        """Decode the table's settings map; raises ProtocolError on garbage."""
        try:
            if not isinstance(obj, dict):
                raise TypeError("settings is not a map")
            return cls(obj.get("copies", 1), obj.get("version", 0))
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"bad settings: {exc}") from exc


DEFAULT_SETTINGS = ClusterSettings()


@dataclass(frozen=True)
class TableDigest:
    buckets: tuple[bytes, ...]  # one hash per bucket of BUCKET_SIZE slots
    members: bytes
    roles: bytes = b""  # b"": no client roles (or a sender that predates them)


@dataclass
class MergeResult:
    changed: list[int] = field(default_factory=list)  # slots whose claim changed
    lost: list[tuple[int, Claim, Claim]] = field(default_factory=list)  # equal-epoch losses
    nodes_changed: bool = False
    clients_changed: bool = False
    settings_changed: bool = False

    @property
    def any(self) -> bool:
        return (bool(self.changed) or self.nodes_changed or self.clients_changed
                or self.settings_changed)


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


def check_copy_set(owner: str, replicas: tuple[str, ...]) -> None:
    """Raise ValueError unless ``(owner, *replicas)`` is a valid copy set.

    A copy set names each node at most once (no two copies of a slot on one
    node), and a slot nobody owns has no replicas.
    """
    if not replicas:
        return
    if not owner:
        raise ValueError("a slot with no owner has no replicas")
    if not all(isinstance(r, str) and 0 < len(r) <= MAX_PEER_ID for r in replicas):
        raise ValueError("replica ids must be non-empty strings")
    if len(set(replicas)) != len(replicas) or owner in replicas:
        raise ValueError(f"two copies on one node in {(owner, *replicas)}")
    if len(replicas) + 1 > MAX_COPIES:
        raise ValueError(f"a copy set has at most {MAX_COPIES} nodes")


class SlotTable:
    """Mutable slot table; every mutation goes through merge or claim."""

    def __init__(self, claims: Sequence[Claim], nodes: Iterable[NodeInfo] = (),
                 clients: Iterable[ClientInfo] = (),
                 replicas: Mapping[int, tuple[str, ...]] | None = None,
                 settings: ClusterSettings = DEFAULT_SETTINGS) -> None:
        if len(claims) != SLOT_COUNT:
            raise ValueError(f"a table has {SLOT_COUNT} claims, got {len(claims)}")
        self._claims: list[Claim] = list(claims)
        # Sparse: slot -> its replicas, for slots that have any (none while copies is 1).
        self._replicas: dict[int, tuple[str, ...]] = {}
        self._bucket_replicas = [0] * BUCKET_COUNT  # slots with replicas, per bucket
        self._bucket_copy_runs: list[list[CopyRun] | None] = [None] * BUCKET_COUNT
        self.settings = settings
        self.nodes: dict[str, NodeInfo] = {n.id: n for n in nodes}
        self.clients: dict[str, ClientInfo] = {}  # tombstones included; see client_role
        self._roles_hash: bytes | None = None
        self.merge_clients(clients)
        self._bucket_cache: list[bytes | None] = [None] * BUCKET_COUNT
        self._bucket_runs: list[list[Run] | None] = [None] * BUCKET_COUNT
        self._runs_cache: list[Run] | None = None
        self._max_epoch: int | None = None
        self._digest: TableDigest | None = None
        self._members_hash: bytes | None = None
        self._unknown = self._claims.count(UNKNOWN)
        for slot, reps in sorted((replicas or {}).items()):
            check_copy_set(self._claims[slot][1], reps)
            self._set_replicas(slot, tuple(reps))

    # -- construction ---------------------------------------------------------

    @classmethod
    def empty(cls) -> SlotTable:
        """A table that knows nothing yet (a joining node before its first gossip)."""
        return cls([UNKNOWN] * SLOT_COUNT)

    @classmethod
    def initial(cls, node_ids: Sequence[str],
                addrs: Mapping[str, Sequence[str]] | None = None) -> SlotTable:
        """go-ds-cluster's initial split over `node_ids`, all at epoch 0."""
        claims: list[Claim] = []
        for node_id, (start, end) in zip(node_ids, initial_ranges(len(node_ids)), strict=True):
            claims.extend([(0, node_id)] * (end - start + 1))
        addrs = addrs or {}
        nodes = [NodeInfo(n, tuple(addrs.get(n, ())), NodeRole.DATA, 1) for n in node_ids]
        return cls(claims, nodes)

    def copy(self) -> SlotTable:
        other = SlotTable.__new__(SlotTable)  # skips __init__'s checks and UNKNOWN count
        other._claims = list(self._claims)
        other.nodes = dict(self.nodes)
        other.clients = dict(self.clients)
        other._roles_hash = self._roles_hash
        other._bucket_cache = list(self._bucket_cache)
        other._bucket_runs = list(self._bucket_runs)
        other._runs_cache = self._runs_cache
        other._max_epoch = self._max_epoch
        other._digest = self._digest
        other._members_hash = self._members_hash
        other._unknown = self._unknown
        other._replicas = dict(self._replicas)
        other._bucket_replicas = list(self._bucket_replicas)
        other._bucket_copy_runs = list(self._bucket_copy_runs)
        other.settings = self.settings
        return other

    # -- queries ----------------------------------------------------------------

    def claim(self, slot: int) -> Claim:
        return self._claims[slot]

    def owner(self, slot: int) -> str | None:
        owner = self._claims[slot][1]
        return owner or None

    def replicas(self, slot: int) -> tuple[str, ...]:
        """The slot's copies after the primary, in order; () while copies is 1."""
        return self._replicas.get(slot, ())

    def copies(self, slot: int) -> tuple[str, ...]:
        """The slot's copy set, primary first; () if its owner is unknown."""
        owner = self._claims[slot][1]
        return (owner, *self._replicas.get(slot, ())) if owner else ()

    def entry(self, slot: int) -> Entry:
        """The slot's full entry (epoch, owner, replicas), the value merge compares."""
        epoch, owner = self._claims[slot]
        return (epoch, owner, self._replicas.get(slot, ()))

    def has_replicas(self) -> bool:
        return bool(self._replicas)

    def replica_slots_of(self, peer: str) -> SlotSet:
        """The slots `peer` holds a copy of without being their primary."""
        return SlotSet.from_slots(sorted(s for s, reps in self._replicas.items() if peer in reps))

    def replica_counts(self) -> dict[str, int]:
        """Replica (non-primary) copies held, per node."""
        counts: dict[str, int] = {}
        for reps in self._replicas.values():
            for r in reps:
                counts[r] = counts.get(r, 0) + 1
        return counts

    def dominates(self, other: SlotTable) -> bool:
        """True if no entry here is lower than the other table's entry for that slot."""
        if self._replicas or other._replicas:
            return all(self.entry(s) >= other.entry(s) for s in range(SLOT_COUNT))
        return all(self._min_claim(start, end) >= (epoch, owner)
                   for start, end, epoch, owner in other._all_runs())

    def max_epoch(self) -> int:
        if self._max_epoch is None:
            self._max_epoch = max(epoch for _, _, epoch, _ in self._all_runs())
        return self._max_epoch

    def slots_of(self, peer: str) -> SlotSet:
        return SlotSet.of((start, end) for start, end, _, owner in self.runs() if owner == peer)

    def slot_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, owner in self._claims:
            counts[owner] = counts.get(owner, 0) + 1
        return counts

    def is_complete(self) -> bool:
        return self._unknown == 0

    def data_nodes(self) -> list[str]:
        return sorted(n.id for n in self.nodes.values() if n.role is NodeRole.DATA)

    def client_role(self, peer: str) -> ClientRole | None:
        """The role granted to a client peer; None if it has none (or a tombstone)."""
        entry = self.clients.get(peer)
        return None if entry is None or entry.role is ClientRole.NONE else entry.role

    def client_roles(self) -> dict[str, ClientRole]:
        """Every client holding a role (tombstones left out), by peer ID."""
        return {p: e.role for p, e in sorted(self.clients.items())
                if e.role is not ClientRole.NONE}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SlotTable):
            return NotImplemented
        return (self._claims == other._claims and self.nodes == other.nodes
                and self.clients == other.clients and self._replicas == other._replicas
                and self.settings == other.settings)

    def __repr__(self) -> str:
        return (f"SlotTable({self.slot_counts()}, nodes={sorted(self.nodes)}, "
                f"clients={len(self.clients)})")

    # -- runs, the compact form -----------------------------------------------

    def runs(self, buckets: Iterable[int] | None = None) -> list[Run]:
        """Consecutive equal claims as (start, end, epoch, owner), optionally of some buckets."""
        if buckets is None:
            return list(self._all_runs())
        out: list[Run] = []
        for b in sorted(set(buckets)):
            out.extend(self._runs_in(b))
        return out

    def copy_runs(self, buckets: Iterable[int] | None = None) -> list[CopyRun]:
        """Consecutive equal entries as (start, end, epoch, owner, replicas)."""
        out: list[CopyRun] = []
        for b in sorted(set(buckets)) if buckets is not None else range(BUCKET_COUNT):
            for run in self._copy_runs_in(b):
                last = out[-1] if out else None
                if (buckets is None and last is not None and last[2:] == run[2:]
                        and last[1] + 1 == run[0]):
                    out[-1] = (last[0], run[1], run[2], run[3], run[4])
                else:
                    out.append(run)
        return out

    def _copy_runs_in(self, bucket: int) -> list[CopyRun]:
        """The bucket's runs of equal entries, cached like `_runs_in` (do not mutate)."""
        runs = self._bucket_copy_runs[bucket]
        if runs is None:
            if not self._bucket_replicas[bucket]:
                runs = [(a, b, e, o, ()) for a, b, e, o in self._runs_in(bucket)]
            else:
                lo = bucket * BUCKET_SIZE
                get = self._replicas.get
                entries = [(e, o, get(s, ())) for s, (e, o) in
                           enumerate(self._claims[lo:lo + BUCKET_SIZE], lo)]
                runs = []
                start = lo
                for (e, o, reps), group in itertools.groupby(entries):
                    size = len(list(group))
                    runs.append((start, start + size - 1, e, o, reps))
                    start += size
            self._bucket_copy_runs[bucket] = runs
        return runs

    def _runs_in(self, bucket: int) -> list[Run]:
        """The runs of one bucket, cached until a claim in it changes (do not mutate)."""
        runs = self._bucket_runs[bucket]
        if runs is None:
            lo = bucket * BUCKET_SIZE
            runs = self._bucket_runs[bucket] = _runs_of(self._claims, lo, lo + BUCKET_SIZE)
        return runs

    def _all_runs(self) -> list[Run]:
        if self._runs_cache is None:
            runs: list[Run] = []
            for b in range(BUCKET_COUNT):  # the buckets' runs, joined across their borders
                for run in self._runs_in(b):
                    last = runs[-1] if runs else None
                    if last is not None and last[2:] == run[2:] and last[1] + 1 == run[0]:
                        runs[-1] = (last[0], run[1], run[2], run[3])
                    else:
                        runs.append(run)
            self._runs_cache = runs
        return self._runs_cache

    def _min_claim(self, start: int, end: int) -> Claim:
        """min(claims[start:end + 1]), from the cached runs of the buckets it touches."""
        best: Claim | None = None
        for b in range(start // BUCKET_SIZE, end // BUCKET_SIZE + 1):
            for run_start, run_end, epoch, owner in self._runs_in(b):
                if run_end >= start and run_start <= end and (best is None
                                                              or (epoch, owner) < best):
                    best = (epoch, owner)
        assert best is not None  # every slot has a claim
        return best

    # -- mutation -----------------------------------------------------------------

    def _set(self, slot: int, claim: Claim) -> None:
        """Raise one slot's claim (merge and the migration flip only ever raise claims)."""
        old = self._claims[slot]
        self._claims[slot] = claim
        self._unknown += (claim == UNKNOWN) - (old == UNKNOWN)
        self._bucket_cache[slot // BUCKET_SIZE] = None
        self._bucket_runs[slot // BUCKET_SIZE] = None
        self._bucket_copy_runs[slot // BUCKET_SIZE] = None
        self._digest = None
        self._runs_cache = None
        if self._max_epoch is not None and claim[0] >= old[0]:
            self._max_epoch = max(self._max_epoch, claim[0])
        else:
            self._max_epoch = None

    def _set_replicas(self, slot: int, replicas: tuple[str, ...]) -> None:
        old = self._replicas.get(slot, ())
        if old == replicas:
            return
        if replicas:
            self._replicas[slot] = replicas
        else:
            del self._replicas[slot]
        bucket = slot // BUCKET_SIZE
        self._bucket_replicas[bucket] += bool(replicas) - bool(old)
        self._bucket_cache[bucket] = None
        self._bucket_copy_runs[bucket] = None
        self._digest = None

    def assign(self, slots: SlotSet, claim: Claim, replicas: Sequence[str] = ()) -> None:
        """Take an entry authoritatively (the migration flip, a new copy set).

        The caller chose a fresh epoch; `replicas` follow the primary `claim[1]`
        in the copy set (ValueError if a node would hold two copies).
        """
        reps = tuple(replicas)
        check_copy_set(claim[1], reps)
        for slot in slots:
            self._set(slot, claim)
            self._set_replicas(slot, reps)

    def merge_runs(self, runs: Iterable[Run], me: str | None = None) -> MergeResult:
        """Per-slot max of our claims and `runs`; reports equal-epoch losses of `me`."""
        result = MergeResult()
        claims, changed, lost = self._claims, result.changed, result.lost
        for start, end, epoch, owner in runs:
            theirs = (epoch, owner)
            # Work run against run, not slot by slot: the pieces of our (cached) runs inside
            # [start, end] that lose to theirs. Usually there are none.
            lower = [(max(a, start), min(b, end), (e, o))
                     for bucket in range(start // BUCKET_SIZE, end // BUCKET_SIZE + 1)
                     for a, b, e, o in self._runs_in(bucket)
                     if b >= start and a <= end and (e, o) < theirs]
            if not lower:
                continue
            for lo, hi, ours in lower:
                if me is not None and ours[1] == me and ours[0] == epoch:
                    lost.extend((slot, ours, theirs) for slot in range(lo, hi + 1))
                if ours == UNKNOWN:
                    self._unknown -= hi - lo + 1
                claims[lo:hi + 1] = itertools.repeat(theirs, hi - lo + 1)
                changed.extend(range(lo, hi + 1))
                if self._replicas:  # a raised claim starts with no replicas
                    for slot in range(lo, hi + 1):
                        self._set_replicas(slot, ())
            # _set's bookkeeping, once per run: a raised claim never lowers the max epoch.
            for bucket in range(lower[0][0] // BUCKET_SIZE, lower[-1][1] // BUCKET_SIZE + 1):
                self._bucket_cache[bucket] = None
                self._bucket_runs[bucket] = None
                self._bucket_copy_runs[bucket] = None
            self._digest = None
            self._runs_cache = None
            if self._max_epoch is not None:
                self._max_epoch = max(self._max_epoch, epoch)
        return result

    def merge_copy_runs(self, runs: Iterable[CopyRun], me: str | None = None) -> MergeResult:
        """Per-slot max of our entries and `runs` (entries with replicas); like merge_runs."""
        result = MergeResult()
        plain: list[Run] = []
        for start, end, epoch, owner, reps in runs:
            if not reps:
                plain.append((start, end, epoch, owner))
                continue
            theirs = (epoch, owner, reps)
            for slot in range(start, end + 1):
                ours_claim = self._claims[slot]
                if (ours_claim[0], ours_claim[1], self._replicas.get(slot, ())) >= theirs:
                    continue
                if me is not None and ours_claim == (epoch, me) != (epoch, owner):
                    result.lost.append((slot, ours_claim, (epoch, owner)))
                if ours_claim != (epoch, owner):
                    self._set(slot, (epoch, owner))
                self._set_replicas(slot, reps)
                result.changed.append(slot)
        if plain:
            other = self.merge_runs(plain, me)
            result.changed.extend(other.changed)
            result.lost.extend(other.lost)
        return result

    def merge_settings(self, settings: ClusterSettings) -> bool:
        if settings.order_key() <= self.settings.order_key():
            return False
        self.settings = settings
        self._digest = None
        self._members_hash = None
        return True

    def merge_nodes(self, nodes: Iterable[NodeInfo]) -> bool:
        changed = False
        for node in nodes:
            ours = self.nodes.get(node.id)
            if ours is None or node.order_key() > ours.order_key():
                self.nodes[node.id] = node
                self._digest = None
                self._members_hash = None
                changed = True
        return changed

    def merge_clients(self, clients: Iterable[ClientInfo]) -> bool:
        """Per-peer max of the client entries; True if any entry changed."""
        changed = False
        for entry in clients:
            ours = self.clients.get(entry.id)
            if ours is None or entry.order_key() > ours.order_key():
                self.clients[entry.id] = entry
                self._digest = None
                self._roles_hash = None
                changed = True
        return changed

    def merge(self, other: SlotTable, me: str | None = None) -> MergeResult:
        result = self.merge_runs(other.runs(), me)
        if other._replicas:  # then the entries that have replicas: max of both steps
            extra = self.merge_copy_runs([r for r in other.copy_runs() if r[4]], me)
            if extra.changed:
                result.changed = sorted(set(result.changed) | set(extra.changed))
            result.lost.extend(extra.lost)
        result.nodes_changed = self.merge_nodes(other.nodes.values())
        result.clients_changed = self.merge_clients(other.clients.values())
        result.settings_changed = self.merge_settings(other.settings)
        return result

    # -- digests --------------------------------------------------------------------

    def _bucket_hash(self, bucket: int) -> bytes:
        cached = self._bucket_cache[bucket]
        if cached is None:
            if self._bucket_replicas[bucket]:
                text = _copy_runs_repr(self._copy_runs_in(bucket))
            else:
                text = _runs_repr(self._runs_in(bucket))
            cached = self._bucket_cache[bucket] = _hash(text.encode())
        return cached

    def members_hash(self) -> bytes:
        if self._members_hash is None:
            members: list[Any] = [self.nodes[n].to_obj() for n in sorted(self.nodes)]
            if self.settings != DEFAULT_SETTINGS:  # default: the hash of before settings
                members.append({"settings": self.settings.to_obj()})
            self._members_hash = _hash(cbor2.dumps(members))
        return self._members_hash

    def roles_hash(self) -> bytes:
        """A hash of every client entry, tombstones included; b"" when there are none."""
        if self._roles_hash is None:
            self._roles_hash = _hash(cbor2.dumps(self._clients_obj())) if self.clients else b""
        return self._roles_hash

    def digest(self) -> TableDigest:
        if self._digest is None:
            self._digest = TableDigest(tuple(self._bucket_hash(b) for b in range(BUCKET_COUNT)),
                                       self.members_hash(), self.roles_hash())
        return self._digest

    def differing_buckets(self, digest: TableDigest) -> list[int]:
        ours = self.digest().buckets
        theirs = digest.buckets
        if ours == theirs:
            return []
        return [b for b in range(BUCKET_COUNT) if ours[b] != theirs[b]]

    # -- CBOR -------------------------------------------------------------------------

    def _clients_obj(self) -> list[dict[str, Any]]:
        return [self.clients[c].to_obj() for c in sorted(self.clients)]

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"runs": [list(r) for r in self.runs()],
                               "nodes": [self.nodes[n].to_obj() for n in sorted(self.nodes)],
                               "clients": self._clients_obj()}
        # Optional keys, written only when they say something: a table without
        # replicas and with default settings is byte for byte the form of before.
        if self._replicas:
            obj["replicas"] = [[start, end, list(reps)]
                               for start, end, _, _, reps in self.copy_runs() if reps]
        if self.settings != DEFAULT_SETTINGS:
            obj["settings"] = self.settings.to_obj()
        return obj

    @classmethod
    def from_obj(cls, obj: Any) -> SlotTable:
        if not isinstance(obj, dict):
            raise ProtocolError("slot table is not a map")
        runs = decode_runs(obj.get("runs"))
        claims = _claims_of_runs(runs)  # the common case: runs tile the slots exactly once
        if claims is None:
            _raise_bad_coverage(runs)
        nodes = obj.get("nodes")
        if not isinstance(nodes, list):
            raise ProtocolError("slot table nodes must be a list")
        clients = obj.get("clients", [])  # absent: a table from before client roles
        if not isinstance(clients, list):
            raise ProtocolError("slot table clients must be a list")
        replicas = _decode_replicas(obj.get("replicas", []), claims)  # absent: copies 1
        settings = ClusterSettings.from_obj(obj.get("settings", {}))
        return cls(claims, [NodeInfo.from_obj(n) for n in nodes],
                   [ClientInfo.from_obj(c) for c in clients], replicas, settings)

    def to_cbor(self) -> bytes:
        return cbor2.dumps(self.to_obj())

    @classmethod
    def from_cbor(cls, data: bytes) -> SlotTable:
        try:
            obj = cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several unrelated types on garbage
            raise ProtocolError(f"slot table is not valid CBOR: {exc}") from exc
        return cls.from_obj(obj)


def _decode_replicas(obj: Any, claims: list[Claim]) -> dict[int, tuple[str, ...]]:
    """Validate the CBOR "replicas" list [[start, end, [id, ...]], ...]; ProtocolError."""
    if not isinstance(obj, list):
        raise ProtocolError("slot table replicas must be a list")
    out: dict[int, tuple[str, ...]] = {}
    for item in obj:
        if not (isinstance(item, (list, tuple)) and len(item) == 3):
            raise ProtocolError(f"bad replica run {item!r}")
        start, end, reps = item
        if not (type(start) is int and type(end) is int and 0 <= start <= end < SLOT_COUNT
                and isinstance(reps, list) and reps):
            raise ProtocolError(f"bad replica run {item!r}")
        for slot in range(start, end + 1):
            if slot in out:
                raise ProtocolError(f"slot {slot} has two replica runs")
            try:
                check_copy_set(claims[slot][1], tuple(reps))
            except ValueError as exc:
                raise ProtocolError(f"bad replicas for slot {slot}: {exc}") from exc
            out[slot] = tuple(reps)
    return out


def decode_copy_runs(obj: Any) -> list[CopyRun]:
    """Validate runs of entries [start, end, epoch, owner, [replica, ...]]; ProtocolError.

    A 4-element run is a claim without replicas (what decode_runs accepts).
    """
    if not isinstance(obj, list):
        raise ProtocolError("copy runs must be a list")
    out: list[CopyRun] = []
    for item in obj:
        if isinstance(item, (list, tuple)) and len(item) == 5:
            (run,), reps = decode_runs([item[:4]]), item[4]
            if not isinstance(reps, (list, tuple)):
                raise ProtocolError(f"bad copy run {item!r}")
            try:
                check_copy_set(run[3], tuple(reps))
            except ValueError as exc:
                raise ProtocolError(f"bad copy run {item!r}: {exc}") from exc
            out.append((*run, tuple(reps)))
        else:
            (run,) = decode_runs([item])
            out.append((*run, ()))
    return out


def _claims_of_runs(runs: list[Run]) -> list[Claim] | None:
    """The claims of runs that cover every slot exactly once, else None."""
    claims: list[Claim] = []
    for start, end, epoch, owner in sorted(runs):
        if start != len(claims):
            return None
        claims.extend(itertools.repeat((epoch, owner), end - start + 1))
    return claims if len(claims) == SLOT_COUNT else None


def _raise_bad_coverage(runs: list[Run]) -> NoReturn:
    """Name the first slot covered twice, or say some slot is not covered."""
    seen = [False] * SLOT_COUNT
    for start, end, _, _ in runs:
        for slot in range(start, end + 1):
            if seen[slot]:
                raise ProtocolError(f"slot {slot} appears twice in the table")
            seen[slot] = True
    raise ProtocolError("slot table does not cover every slot")


def _runs_repr(runs: list[Run]) -> str:
    """repr() of the list of claims these runs cover: the text a bucket's hash is taken of.

    Ints and str make the text stable everywhere; buckets are mostly a run or two, so
    repeating one claim's text is much cheaper than repr() of 256 tuples.
    """
    return "[" + ", ".join(", ".join(itertools.repeat(repr((epoch, owner)), end - start + 1))
                           for start, end, epoch, owner in runs) + "]"


def _copy_runs_repr(runs: list[CopyRun]) -> str:
    """The text of a bucket's entries: `_runs_repr`'s, with replicas where a slot has any."""
    return "[" + ", ".join(
        ", ".join(itertools.repeat(repr((epoch, owner, reps) if reps else (epoch, owner)),
                                   end - start + 1))
        for start, end, epoch, owner, reps in runs) + "]"


def _runs_of(claims: list[Claim], lo: int, hi: int) -> list[Run]:
    runs: list[Run] = []
    start = lo
    for claim, group in itertools.groupby(claims[lo:hi]):
        size = len(list(group))
        runs.append((start, start + size - 1, claim[0], claim[1]))
        start += size
    return runs


def decode_runs(obj: Any) -> list[Run]:
    """Validate wire runs; raises ProtocolError."""
    if not isinstance(obj, list):
        raise ProtocolError("runs must be a list")
    runs: list[Run] = []
    for item in obj:
        if not (isinstance(item, (list, tuple)) and len(item) == 4):
            raise ProtocolError(f"bad run {item!r}")
        start, end, epoch, owner = item
        if not (type(start) is int and type(end) is int and type(epoch) is int
                and isinstance(owner, str)):
            raise ProtocolError(f"bad run {item!r}")
        if not (0 <= start <= end < SLOT_COUNT) or epoch < -1 or (epoch == -1) != (owner == ""):
            raise ProtocolError(f"bad run {item!r}")
        runs.append((start, end, epoch, owner))
    return runs
