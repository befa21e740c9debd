"""Statistics that serving-side reports share with the lab (the dashboards' error bars, the model cards' test figures).

The lab's classification, calibration and paired-test metrics are in fer_core.lab.metrics.
"""
from __future__ import annotations

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% (by default) Wilson score interval for a proportion such as accuracy.

    Why Wilson and not +-1.96 SE: it stays inside [0, 1] and is honest for small n or extreme rates.
    """
    if n <= 0:
        raise ValueError(f"n={n}: an interval needs at least one face")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} is outside 0..n={n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no rounding past the rate itself
    high = 1.0 if successes == n else min(1.0, centre + half)
    return float(low), float(high)
