"""dscluster.roles is the one home of Role and the clients file: the node, dscfg and dsclient
import it, and it loads neither the daemon nor libp2p until a clients file is read."""

import subprocess
import sys

CHILD = r'''
import sys
import dscluster.roles as roles
heavy = sorted(m for m in sys.modules if m.split(".")[0] == "libp2p" or m.startswith("dscluster.node"))
assert not heavy, heavy
from dscluster.net.host import Identity
peer = Identity.generate().peer_id_str
assert roles.parse_clients([f"{peer} admin\n", "# a comment\n"]) == {peer: roles.Role.ADMIN}
import dscluster.node.auth as auth, dscluster.node.clients as clients
assert auth.Role is roles.Role and clients.parse_clients is roles.parse_clients
print("ok")
'''


def test_roles_imports_no_daemon_and_no_libp2p() -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
