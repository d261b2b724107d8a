"""Global time cutoffs and purging: four consecutive segments, the same instants for every symbol.

A row at time t with label end time e (open time of the h-th next bar) belongs to the segment that
holds t, unless its label reaches across the next cutoff c (e >= c) or it sits in the last
``horizon`` bars before c; such rows are purged. ``embargo`` more bars after each cutoff are dropped
too, for serially correlated features.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from rstack._io import utc_text

if TYPE_CHECKING:
    from pyspark.sql import Column

SEGMENTS = ("l0_train", "l1_fit", "l2_fit", "test")
PURGED = -1


@dataclass(frozen=True)
class Cutoffs:
    start_ms: int
    end_ms: int
    bar_ms: int
    cutoffs_ms: tuple[int, int, int]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cutoffs_utc"] = [utc_text(c) for c in self.cutoffs_ms]
        d["start_utc"], d["end_utc"] = utc_text(self.start_ms), utc_text(self.end_ms)
        return d


def compute_cutoffs(start_ms: int, end_ms: int, bar_ms: int, fractions: tuple[float, ...]) -> Cutoffs:
    """Cutoffs at cumulative fractions of [start, end], snapped down to the bar grid from start."""
    bars = (end_ms - start_ms) // bar_ms + 1
    cuts = []
    acc = 0.0
    for frac in fractions[:3]:
        acc += frac
        # The epsilon absorbs float sums such as 0.7 + 0.1 = 0.7999999999999999.
        cuts.append(start_ms + math.floor(acc * bars + 1e-9) * bar_ms)
    return Cutoffs(start_ms=start_ms, end_ms=end_ms, bar_ms=bar_ms, cutoffs_ms=tuple(cuts))  # type: ignore[arg-type]


def segment_column(cut: Cutoffs, horizon: int, embargo: int) -> Column:
    """0..3 for the four segments, PURGED (-1) for rows removed at a boundary."""
    from pyspark.sql import functions as F

    t, end = F.col("open_time"), F.col("label_end_time")
    expr = F.lit(3)
    # Built from the last boundary backwards so the first matching branch wins.
    for i in reversed(range(3)):
        c = cut.cutoffs_ms[i]
        purge = (end >= F.lit(c)) | (t >= F.lit(c - horizon * cut.bar_ms))
        expr = F.when(t < F.lit(c), F.when(purge, F.lit(PURGED)).otherwise(F.lit(i))).otherwise(
            F.when(t < F.lit(c + embargo * cut.bar_ms), F.lit(PURGED)).otherwise(expr)
        )
    return expr
