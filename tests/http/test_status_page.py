"""The status page in a real headless browser (Debian's chromium) against a live cluster.

The page is rendered by chromium (``--dump-dom`` after its script has polled
/status.json), for a live 3-node cluster: it shows three nodes up and all
16,384 slots; after a rebalance moves 100 slots the owners' counts change;
after a node is stopped it shows that node down and two up.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from dscluster.core.gossip import Liveness
from dscluster.core.slots import SlotSet
from dscluster.http.server import serve_node_http
from dscluster.testing.cluster import local_cluster

ROW = re.compile(r'<tr data-peer="([^"]+)" data-state="([a-z]+)">.*?'
                 r'<td class="num slots">(\d+)</td>', re.S)
SUMMARY = re.compile(r'<div id="summary" data-nodes="(\d+)" data-up="(\d+)" '
                     r'data-slots="(\d+)">')


@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        try:
            subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, timeout=900,
                           capture_output=True)
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"chromium is missing and apt-get could not install it: {exc}")
        found = shutil.which("chromium")
        if found is None:
            pytest.skip("apt-get installed no chromium binary")
    return found


async def render(chromium: str, url: str, profile: Path) -> str:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
           "--virtual-time-budget=3000", "--dump-dom", url]
    with trio.fail_after(120):
        done = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True)
    return done.stdout.decode("utf-8", "replace")


async def until(check: Callable[[], bool]) -> None:
    with trio.fail_after(60):  # a hang guard, not a measurement
        while not check():
            await trio.sleep(0.1)


async def test_status_page_follows_the_cluster(tmp_path: Path, chromium: str) -> None:
    async with local_cluster(tmp_path / "c", 3) as c, \
            serve_node_http(c.nodes[0], "127.0.0.1:0") as urls:
        ids = [n.peer_id for n in c.nodes]
        page = await render(chromium, urls[0] + "/", tmp_path / "profile")
        assert SUMMARY.search(page), page[-2000:]
        assert SUMMARY.search(page).groups() == ("3", "3", "16384")  # type: ignore[union-attr]
        rows = table_rows(page)
        assert set(rows) == set(ids)
        assert all(state == "up" for state, _ in rows.values())
        assert sum(slots for _, slots in rows.values()) == 16384
        assert "<canvas" in page and "(this node)" in page

        await c.nodes[0].start_migration(SlotSet.of([(0, 99)]), ids[1])
        await until(lambda: c.nodes[0].core.table.owner(0) == ids[1]
                    and not c.nodes[0].core.migrations)
        # The page's data may be up to a second old (the snapshot cache): render again
        # until it shows the move.
        page = await render_until(chromium, urls[0], tmp_path, lambda rows: rows[ids[0]][1] != 5461)
        rows = table_rows(page)
        assert rows[ids[0]][1] == 5461 - 100 and rows[ids[1]][1] == 5462 + 100
        assert sum(slots for _, slots in rows.values()) == 16384

        await c.stop_node(2)
        await until(lambda: c.nodes[0].core.liveness(ids[2]) is not Liveness.UP)
        page = await render_until(chromium, urls[0], tmp_path,
                                  lambda rows: rows[ids[2]][0] != "up")
        assert SUMMARY.search(page).groups()[:2] == ("3", "2")  # type: ignore[union-attr]
        rows = table_rows(page)
        assert rows[ids[2]][0] in ("down", "pfail", "fail")
        assert rows[ids[0]][0] == rows[ids[1]][0] == "up"


def table_rows(page: str) -> dict[str, tuple[str, int]]:
    return {peer: (state, int(slots)) for peer, state, slots in ROW.findall(page)}


async def render_until(chromium: str, url: str, tmp: Path,
                       done: Callable[[dict[str, tuple[str, int]]], bool]) -> str:
    with trio.fail_after(120):  # a hang guard
        while True:
            page = await render(chromium, url + "/", tmp / "profile")
            if done(table_rows(page)):
                return page
            await trio.sleep(0.5)
