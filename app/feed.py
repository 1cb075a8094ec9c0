"""A synthetic market-feature feed, so `python -m app` shows the brain deciding with no market.

Pure and deterministic: a seeded random walk of the 16 features.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def synthetic_features(n_features: int, *, seed: int = 42) -> Iterator[np.ndarray]:
    """An endless series of feature rows: a mean-reverting random walk, one row per tick."""
    rng = np.random.default_rng(seed)
    state = np.zeros(n_features, dtype=np.float32)
    while True:
        state = (0.9 * state + rng.standard_normal(n_features)).astype(np.float32)
        yield state.copy()
