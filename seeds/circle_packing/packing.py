"""Circle packing: n = 26 circles in the unit square, maximising the sum of their radii.

`pack(n)` returns n triples (x, y, r): centre and radius. evaluate.py runs it in a process of its
own, checks that every circle lies inside [0, 1] x [0, 1] and that no two overlap (tolerance
1e-9), and scores the sum of the radii. The header (this docstring, `pack` and `feasible`) never
changes: `pack` places the centres (`place`), sizes the circles (`radii`) and repairs radii that
break the rules.
"""

import math

import numpy as np


def pack(n):
    centres = np.clip(np.asarray(place(n), dtype=float).reshape(n, 2), 0.0, 1.0)
    r = feasible(centres, np.asarray(radii(centres), dtype=float).reshape(n))
    return [(float(x), float(y), float(ri)) for (x, y), ri in zip(centres, r)]


def feasible(centres, r):
    """The radii made valid where they are not: each capped by the walls (and at least 0), then
    each overlapping pair scaled down; a valid packing passes unchanged."""
    x, y = centres[:, 0], centres[:, 1]
    r = np.clip(np.nan_to_num(r), 0.0, np.minimum(np.minimum(x, 1 - x), np.minimum(y, 1 - y)))
    for i in range(len(r)):
        for j in range(i + 1, len(r)):
            d = math.dist(centres[i], centres[j])
            if r[i] + r[j] > d:
                r[i], r[j] = r[i] * d / (r[i] + r[j]), r[j] * d / (r[i] + r[j])
    return r


# --OPTION--
def place(n):
    # -- NOTE --
    # The centres: a float array of shape (n, 2), every point in [0, 1] x [0, 1]. Here: rows of
    # circles, the rows spaced evenly between two margins, each row's circles spaced evenly.
    # The best known packings of 26 circles (sum of radii about 2.635) mix sizes: large
    # circles inside, small ones in the gaps and the corners. Any construction (an optimisation
    # with numpy, a pattern, fixed coordinates) is fine as long as pack(26) runs in seconds.
    # -- NOTE --
    rows = [5, 5, 6, 5, 5]
    assert sum(rows) == n, "the rows must hold n circles"
    margin = 0.1
    points = []
    for i, count in enumerate(rows):
        y = margin + (1 - 2 * margin) * i / (len(rows) - 1)
        for j in range(count):
            points.append(((j + 0.5) / count, y))
    return np.array(points, dtype=float)


# --OPTION--
def radii(centres):
    # -- NOTE --
    # The radii for the centres: a float array of n values >= 0. Here: half the distance to the
    # nearest other centre, capped by the distance to the nearest wall (valid by construction,
    # but it leaves gaps wherever neighbours differ in size). The largest sum for fixed centres
    # is a linear programme (maximise sum r subject to r_i + r_j <= d_ij and r_i <= the wall
    # distances). pack() repairs invalid radii (caps them by the walls, shrinks overlapping
    # pairs), which costs score: valid radii score as they are.
    # -- NOTE --
    x, y = centres[:, 0], centres[:, 1]
    walls = np.minimum(np.minimum(x, 1 - x), np.minimum(y, 1 - y))
    distance = np.sqrt(((centres[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1))
    np.fill_diagonal(distance, np.inf)
    return np.minimum(walls, distance.min(axis=1) / 2)
