"""pyproject.toml declares what the code imports: the base install for a node and a client,
the extras for the optional parts, and nothing in the base that no module imports."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

import dscluster

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dscluster", "dsclient", "dscfg", "ipfs_plugin")
# Files that may import what only an extra brings (besides the base dependencies).
EXTRA_FILES = {
    "dscluster/datastore/mongo.py": {"mongo"},
    "dscluster/http/": {"http"},
    "dscluster/testing/": {"test", "kubo"},
}


def _name(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = _project()
    base = {_name(Requirement(r).name) for r in project["dependencies"]}
    extras = {extra: {_name(Requirement(r).name) for r in reqs}
              for extra, reqs in project["optional-dependencies"].items()}
    return base, extras


def _imports() -> dict[str, set[str]]:
    """file -> top-level third-party modules it imports (anywhere in the file)."""
    own = set(PACKAGES)
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            mods: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    mods.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods.add(node.module.split(".")[0])
            found[path.relative_to(ROOT).as_posix()] = {
                m for m in mods if m not in sys.stdlib_module_names and m not in own}
    return found


def _allowed_extras(file: str) -> set[str]:
    return set().union(*(extras for prefix, extras in EXTRA_FILES.items()
                         if file == prefix or (prefix.endswith("/") and file.startswith(prefix))))


def test_every_import_is_declared_and_extras_only_where_optional() -> None:
    base, extras = _declared()
    dists = importlib.metadata.packages_distributions()
    missing = []
    for file, mods in _imports().items():
        allowed = base.union(*(extras[e] for e in _allowed_extras(file)))
        for mod in sorted(mods):
            owners = {_name(d) for d in dists.get(mod, [mod])}
            if not owners & allowed:
                missing.append(f"{file}: {mod} ({', '.join(sorted(owners))})")
    assert not missing, "imports not declared where they are used:\n" + "\n".join(missing)


def test_every_base_dependency_is_imported_directly() -> None:
    base, _ = _declared()
    dists = importlib.metadata.packages_distributions()
    imported = {_name(d) for mods in _imports().values() for m in mods
                for d in dists.get(m, [m])}
    assert base <= imported, f"declared but never imported: {sorted(base - imported)}"


def test_the_test_extra_brings_the_other_extras() -> None:
    test = [Requirement(r) for r in _project()["optional-dependencies"]["test"]]
    own = [r for r in test if _name(r.name) == "ds-cluster"]
    assert own and own[0].extras == {"mongo", "kubo", "http"}


def test_one_version_source() -> None:
    project = _project()
    assert "version" not in project and project["dynamic"] == ["version"]
    assert importlib.metadata.version("ds-cluster") == dscluster.__version__


def test_every_package_ships_py_typed_and_the_license_exists() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "py.typed").is_file(), package
    assert "MIT License" in (ROOT / "LICENSE").read_text()
