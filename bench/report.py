"""One results table for all benchmarks: rows of figure, baseline, ratio, target, met?

A benchmark calls ``record(...)`` for each figure it wants in the summary and
still prints its own lines, so it reads the same alone (``python -m
bench.NAME``) as under ``python -m bench``, which prints ``summary()`` at the
end. ``memo`` lets benches share one measurement of an expensive baseline
(the raw py-libp2p rates, Redis) within one run instead of measuring twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    name: str
    figure: float
    unit: str
    baseline: float | None = None  # same unit as figure, measured in the same run
    baseline_name: str = ""
    target_ratio: float | None = None  # figure / baseline must reach this...
    lower_is_better: bool = False  # ...or stay at or under it (latency, memory)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.figure / self.baseline

    @property
    def met(self) -> bool | None:
        if self.ratio is None or self.target_ratio is None:
            return None
        if self.lower_is_better:
            return self.ratio <= self.target_ratio
        return self.ratio >= self.target_ratio


_ROWS: list[Row] = []
_MEMO: dict[str, object] = {}


def record(name: str, figure: float, unit: str, baseline: float | None = None,
           target_ratio: float | None = None, *, baseline_name: str = "",
           lower_is_better: bool = False) -> Row:
    """Add a row to the summary; returns it (benches print ``format_row(row)``)."""
    row = Row(name, figure, unit, baseline, baseline_name, target_ratio, lower_is_better)
    _ROWS.append(row)
    return row


def memo(key: str, measure: Callable[[], T]) -> T:
    """``measure()`` once per process under ``key``; later calls get the same result."""
    if key not in _MEMO:
        _MEMO[key] = measure()
    return _MEMO[key]  # type: ignore[return-value]


def rows() -> list[Row]:
    return list(_ROWS)


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def format_row(row: Row) -> str:
    base = f"{_num(row.baseline)} {row.baseline_name}".strip() if row.baseline is not None else "-"
    ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
    if row.target_ratio is None:
        target = "-"
    else:
        target = ("<= " if row.lower_is_better else ">= ") + f"{row.target_ratio:g}x"
    met = {None: "-", True: "yes", False: "NO"}[row.met]
    return f"{row.name:<46} {_num(row.figure) + ' ' + row.unit:>18}  {base:>30}  " \
           f"{ratio:>7}  {target:>8}  {met:>4}"


def summary(rows_: list[Row] | None = None) -> str:
    rows_ = _ROWS if rows_ is None else rows_
    head = f"{'figure':<46} {'value':>18}  {'baseline (same run)':>30}  {'ratio':>7}  " \
           f"{'target':>8}  {'met?':>4}"
    return "\n".join([head, "-" * len(head), *(format_row(r) for r in rows_)])
