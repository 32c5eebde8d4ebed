"""Loss landscapes (Li et al. 2018): f(a, b) = L(theta + a*d1 + b*d2) on filter-normalised directions.

directions.py  `random_directions` (Gaussian, normalised per filter / officially / per layer),
               which tensors stay fixed, `directions_from_flat`
grid.py        `evaluate_grid` -> `LandscapeGrid` (loss, nll, acc, weight-decay penalty per cell)
"""

from alternet_pl.analysis.landscape.directions import (
    IGNORES,
    NORMS,
    OFFICIAL_SKIP_PATTERNS,
    SKIP_PATTERNS,
    Directions,
    Ignore,
    Norm,
    directions_from_flat,
    is_zeroed,
    normalise,
    random_directions,
)
from alternet_pl.analysis.landscape.grid import LandscapeGrid, evaluate_grid

__all__ = [
    "IGNORES",
    "NORMS",
    "OFFICIAL_SKIP_PATTERNS",
    "SKIP_PATTERNS",
    "Directions",
    "Ignore",
    "LandscapeGrid",
    "Norm",
    "directions_from_flat",
    "evaluate_grid",
    "is_zeroed",
    "normalise",
    "random_directions",
]
