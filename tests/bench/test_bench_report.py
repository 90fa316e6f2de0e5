"""bench.report (the summary table) and the bench dispatcher's choices."""

from __future__ import annotations

import pytest

from bench import __main__ as dispatcher
from bench import redis_baseline, report


def test_ratio_and_target_higher_is_better() -> None:
    row = report.Row("put", 300.0, "ops/s", 100.0, "raw", 3)
    assert row.ratio == pytest.approx(3.0)
    assert row.met is True
    assert report.Row("put", 299.0, "ops/s", 100.0, "raw", 3).met is False


def test_lower_is_better_and_missing_parts() -> None:
    assert report.Row("p99", 2.0, "ms", 1.0, "raw", 3, lower_is_better=True).met is True
    assert report.Row("p99", 4.0, "ms", 1.0, "raw", 3, lower_is_better=True).met is False
    assert report.Row("add", 50.0, "MB/s").met is None
    assert report.Row("x", 1.0, "s", 0.0, "", 1).ratio is None


def test_summary_lists_every_row_with_its_verdict() -> None:
    rows = [report.Row("cluster put", 300.0, "ops/s", 100.0, "raw", 3),
            report.Row("node rss", 300.0, "MiB", 250.0, "limit", 1, lower_is_better=True)]
    text = report.summary(rows)
    lines = text.splitlines()
    assert len(lines) == 4
    assert "3.00x" in lines[2] and lines[2].rstrip().endswith("yes")
    assert "1.20x" in lines[3] and lines[3].rstrip().endswith("NO")


def test_memo_measures_once() -> None:
    calls = []

    def measure() -> int:
        calls.append(1)
        return 42

    key = "test-memo-measures-once"
    assert report.memo(key, measure) == 42
    assert report.memo(key, measure) == 42
    assert len(calls) == 1


def test_dispatcher_runs_baselines_first() -> None:
    names = dispatcher.available()
    assert "report" not in names
    assert names[:2] == ["p2p_baseline", "redis_baseline"]


def test_dispatcher_refuses_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert dispatcher.main(["no_such_bench"]) == 2
    assert "unknown benchmark no_such_bench" in capsys.readouterr().out


def test_redis_slot_matches_redis_cluster_vectors() -> None:
    # From the Redis Cluster specification: CRC16/XMODEM("123456789") = 0x31C3.
    assert redis_baseline.redis_slot(b"123456789") == 0x31C3 % 16384
    assert redis_baseline.redis_slot(b"foo") == 12182  # CLUSTER KEYSLOT foo
