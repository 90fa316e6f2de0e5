"""`dsclient --help`, `--version` and `hashslot` import neither py-libp2p nor trio;
`dscluster` and `dscfg` `--help` and `--version` do not import py-libp2p.

Importing py-libp2p (QUIC, ACME, mDNS, Prometheus) made every dsclient
command take 1.1-2.5 s before it parsed its arguments; bench/cli_startup.py
measures the time, this test checks the cause in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHECK = """
import contextlib, io, sys
from dsclient.cli import main
runs = [["--help"], ["--version"], ["cluster", "--help"], ["ipfs", "--help"],
        ["add", "--help"], ["hashslot", "/foo"],
        ["hashslot", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"]]
for argv in runs:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0, (argv, code)
    assert out.getvalue(), argv
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("libp2p", "trio", "multiaddr"))
print(" ".join(heavy) or "none")
"""


def test_help_version_and_hashslot_import_no_libp2p_nor_trio(tmp_path):
    r = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "none", r.stdout


NODE_AND_CFG = """
import contextlib, io, sys
from dscfg.cli import main as dscfg
from dscluster.cli import main as dscluster
for main, argv in ((dscluster, ["--help"]), (dscluster, ["--version"]), (dscfg, ["--help"]),
                   (dscfg, ["--version"]), (dscfg, ["cluster", "--help"])):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0 and out.getvalue(), argv
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] == "libp2p")) or "none")
"""


def test_dscluster_and_dscfg_help_and_version_import_no_libp2p(tmp_path):
    r = subprocess.run([sys.executable, "-c", NODE_AND_CFG], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "none", r.stdout


def test_hashslot_reads_the_owner_from_the_config_without_libp2p(tmp_path):
    peer = "12D3KooWPkzd31YUfGFDqD1UJJ9pxEQ1sBFp1749yejA3PTvDtmf"
    (tmp_path / "config.json").write_text(json.dumps({
        "identity": {"peer_id": "x", "sk": "y"},
        "nodes": [{"id": peer, "slots": [{"start": 0, "end": 5000}], "swarm": []}]}))
    code = (f"import sys\nfrom dsclient.cli import main\n"
            f"main(['--conf', {str(tmp_path)!r}, 'hashslot', '/foo'])\n"
            "assert 'libp2p' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["key: /foo", "slot: 3194", f"node: {peer}"]


def test_shell_completion_completes_commands_and_subcommands():
    from dscluster.procs import script

    for words, cword, want in (("dsclient clu", "1", "cluster"),
                               ("dsclient cluster st", "2", "status"),
                               ("dscfg cl", "1", "client")):
        prog = words.split()[0]
        env = {**os.environ, f"_{prog.upper()}_COMPLETE": "complete_bash",
               "COMP_WORDS": words, "COMP_CWORD": cword}
        r = subprocess.run([script(prog)], capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr
        assert want in r.stdout.split(), (words, r.stdout)
