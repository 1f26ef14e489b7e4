"""Fixed-bin histograms: distributions in fixed memory that merge across workers exactly.

A report over millions of rows cannot keep every value, and a sketch whose bins depend on the
data seen so far would merge differently depending on how Beam split the work. Here every value
falls in a bin fixed in advance, so merging is adding counts and the result is the same however
the rows were spread. Bins are sparse (only those hit are kept):

    fraction  values in [0, 1]: bin round(v * 1000), so quantiles are exact to 0.0005
    count     token counts: exact below 128; above, 64 bins per power of two, so a quantile is
              the lower edge of its bin, at most 1/64 (1.6%) below the true value

    Histogram.counts().add([3, 3, 200])  ->  bins {3: 2, 200 -> bin of [200, 202): 1}
                                             quantile(0.5) == 3, min 3, max 200 (exact)

min, max, count and sum (so the mean) are exact; quantiles use the nearest-rank rule.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

FRACTION_BINS = 1000
_EXACT_BELOW = 128  # 2**7
_PER_OCTAVE = 64
QUANTILES = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


@dataclass
class Histogram:
    """Mergeable distribution of non-negative values on fixed bins (`scale`: fraction or count)."""

    scale: str
    bins: Counter = field(default_factory=Counter)  # bin index -> values
    count: int = 0
    total: float = 0.0
    low: float | None = None
    high: float | None = None

    @classmethod
    def fractions(cls) -> Histogram:
        return cls("fraction")

    @classmethod
    def counts(cls) -> Histogram:
        return cls("count")

    def add(self, values: np.ndarray) -> None:
        """Count an array of values (one call per batch, no Python loop per value)."""
        values = np.asarray(values, dtype=np.float64)
        if not len(values):
            return
        index, hits = np.unique(self._bin(values), return_counts=True)
        self.bins.update(dict(zip(index.tolist(), hits.tolist())))
        self.count += len(values)
        self.total += float(values.sum())
        self.low = min(float(values.min()), self.low if self.low is not None else np.inf)
        self.high = max(float(values.max()), self.high if self.high is not None else -np.inf)

    def merge(self, other: Histogram) -> Histogram:
        self.bins += other.bins
        self.count += other.count
        self.total += other.total
        self.low = min((v for v in (self.low, other.low) if v is not None), default=None)
        self.high = max((v for v in (self.high, other.high) if v is not None), default=None)
        return self

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile, as its bin's value (min and max are exact)."""
        if not self.count:
            return None
        if q <= 0:
            return self.low
        if q >= 1:
            return self.high
        rank, seen = max(1, int(np.ceil(q * self.count))), 0
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen >= rank:
                return min(max(self.edge(index), self.low), self.high)
        return self.high

    def edge(self, index: int) -> float:
        """The lowest value of bin `index`."""
        if self.scale == "fraction":
            return index / FRACTION_BINS
        if index < _EXACT_BELOW:
            return float(index)
        octave, step = divmod(index - _EXACT_BELOW, _PER_OCTAVE)
        start = 2.0 ** (7 + octave)
        return float(np.ceil(start + step * start / _PER_OCTAVE))

    def summary(self) -> dict[str, object]:
        """count, mean, min, the QUANTILES, max, and the non-empty bins as [lowest value, count]
        pairs in order (what the report's plots are drawn from)."""
        if not self.count:
            return {"count": 0}
        digits = 4 if self.scale == "fraction" else 1
        summary: dict[str, object] = {"count": self.count, "mean": round(self.total / self.count, digits), "min": self.low}
        summary |= {f"p{round(q * 100)}": self.quantile(q) for q in QUANTILES}
        summary["max"] = self.high
        summary["bins"] = [[self.edge(index), self.bins[index]] for index in sorted(self.bins)]
        return summary

    def _bin(self, values: np.ndarray) -> np.ndarray:
        if self.scale == "fraction":
            return np.rint(values * FRACTION_BINS).astype(np.int64)
        exact = values < _EXACT_BELOW
        safe = np.maximum(values, _EXACT_BELOW)
        octave = np.floor(np.log2(safe)).astype(np.int64)
        step = np.floor((safe / 2.0**octave - 1) * _PER_OCTAVE).astype(np.int64)
        return np.where(exact, values.astype(np.int64), _EXACT_BELOW + (octave - 7) * _PER_OCTAVE + np.minimum(step, _PER_OCTAVE - 1))
