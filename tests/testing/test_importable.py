"""dscluster.testing ships in the wheel: every module imports without pytest or hypothesis."""

import subprocess
import sys

# Runs in a fresh interpreter whose import system refuses the test-only packages.
CHILD = r'''
import importlib, importlib.abc, pkgutil, sys

BLOCKED = ("pytest", "_pytest", "pytest_trio", "hypothesis")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
try:
    import pytest  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the finder did not block pytest")

import dscluster.testing
names = sorted(m.name for m in pkgutil.walk_packages(dscluster.testing.__path__,
                                                      "dscluster.testing."))
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not leaked, leaked

# What needs no test extra still works; what does says so.
from dscluster.datastore.query import Entry, Query
from dscluster.testing import conformance, fuzz
assert conformance.reference_query(Query(prefix="/a"), {"/a/x": b"1", "/b": b"2"}) == [
    Entry("/a/x", b"1", -1)]
try:
    fuzz.run_target(fuzz.TARGETS[0], max_examples=1)
except RuntimeError as exc:
    assert "pip install 'ds-cluster[test]'" in str(exc), exc
else:
    raise AssertionError("run_target ran without hypothesis")
from dscluster.testing.simulate import run_seed
assert run_seed(3, fault_steps=40).stats["ops"] > 0
print("imported", " ".join(names))
'''


def test_every_testing_module_imports_without_pytest_or_hypothesis() -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    imported = proc.stdout.split()
    for name in ("conformance", "fuzz", "kubo", "cluster", "simulate", "sim.world",
                 "sim.checks", "sim.runner"):
        assert f"dscluster.testing.{name}" in imported, proc.stdout
