"""Circle packing: n = 26 circles in the unit square, maximising the sum of their radii.

`pack(n)` returns n triples (x, y, r): centre and radius. evaluate.py runs it in a process of its
own, checks that every circle lies inside [0, 1] x [0, 1] and that no two overlap (tolerance
1e-9), and scores the sum of the radii. The header (this docstring and `pack`) never changes.
"""

import math

import numpy as np


def pack(n):
    centres = place(n)
    return [(float(x), float(y), float(r)) for (x, y), r in zip(centres, radii(centres))]


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
    # The radii for fixed centres: a float array of n values >= 0 such that each circle stays in
    # the square and no two overlap. Here: each radius starts at the distance to the nearest
    # wall, then every overlapping pair is shrunk in proportion until none overlaps. The largest
    # sum for fixed centres is a linear programme (maximise sum r subject to r_i + r_j <= d_ij and
    # r_i <= the wall distances).
    # -- NOTE --
    n = len(centres)
    x, y = centres[:, 0], centres[:, 1]
    r = np.minimum(np.minimum(x, 1 - x), np.minimum(y, 1 - y))
    for i in range(n):
        for j in range(i + 1, n):
            d = math.dist(centres[i], centres[j])
            if r[i] + r[j] > d:
                scale = d / (r[i] + r[j])
                r[i] *= scale
                r[j] *= scale
    return r
