"""Cap set, n = 8: a priority function for the greedy construction of a large cap set in Z_3^8.

A cap set holds no three distinct vectors a, b, c on a line (a + b + c = 0 mod 3 in every
coordinate). evaluate.py sorts all 3**8 = 6,561 vectors by `priority(vector, n)`, highest first
(ties keep the lexicographic order), and adds each vector that makes no line with two already
added; the score is the size of the set (FunSearch's setting). The header (this docstring and the
imports) never changes.
"""

import itertools  # noqa: F401  (available to the priority function)
import math  # noqa: F401

import numpy as np  # noqa: F401


# --OPTION--
def priority(vector, n):
    # -- NOTE --
    # vector: a tuple of n ints in {0, 1, 2}; n = 8. Return a finite float: vectors with a higher
    # priority are offered to the greedy construction first. Here: prefer vectors with few 2s,
    # then few 1s (a weighted count of the coordinates). A constant priority gives the
    # lexicographic greedy set, {0, 1}^8 (256 vectors). The largest cap set known in dimension 8
    # has 512 vectors (FunSearch, 2023; 496 before); priority functions that reach it exploit
    # symmetry (e.g. the coordinates in pairs or blocks, counts of each value mod 3).
    # priority runs once per vector (6,561 calls): keep it fast.
    # -- NOTE --
    ones = sum(1 for v in vector if v == 1)
    twos = sum(1 for v in vector if v == 2)
    return -1.0 * twos - 0.5 * ones
