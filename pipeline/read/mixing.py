"""Deterministic mixing of named sources by weight (`--mix a=0.7,b=0.3`).

Mixing only ever down-samples, never repeats an example: the source that is scarcest relative to
its weight is kept whole, and every other source is thinned to match the weights.

    counts {a: 1000, b: 100}, weights {a: 0.5, b: 0.5}
    total kept N = min(1000 / 0.5, 100 / 0.5) = 200  ->  keep a: 100/1000 = 0.1, b: 100/100 = 1.0

Whether one example is kept is a seeded hash of its id compared with its source's rate, so the
same data, weights and seed keep the same examples on any runner.
"""

from __future__ import annotations

from masked_shards.write.shards import stable_hash


def keep_rates(counts: dict[str, int], weights: dict[str, float]) -> dict[str, float]:
    """Per source, the fraction of its examples to keep."""
    total_weight = sum(weights.values())
    shares = {name: weight / total_weight for name, weight in weights.items()}
    present = {name: counts.get(name, 0) for name in shares}
    if not any(present.values()):
        return {name: 1.0 for name in shares}
    kept_total = min(present[name] / share for name, share in shares.items() if present[name] > 0)
    return {name: min(1.0, shares[name] * kept_total / present[name]) if present[name] else 1.0 for name in shares}


def is_kept(example_id: str, rate: float, seed: int) -> bool:
    return rate >= 1.0 or stable_hash(seed, "mix", example_id) < rate * 2**64
