"""fast_exp: a float32 approximation of exp(x) for x in [-87, 88], in numpy arithmetic.

exp(x) = 2**k * exp(r) with k an integer and r = x - k*ln2 small: `reduce` finds k and r,
`poly` approximates exp(r) on the reduced interval, `reconstruct` scales the result by 2**k.
evaluate.py calls `fast_exp` once on a float32 array whose every operation is counted, and scores
the maximum relative error against float64 exp and the weighted number of operations.
"""

import numpy as np

LN2 = 0.6931471805599453  # ln(2); a Python float: multiplying a float32 array keeps float32
LOG2E = 1.4426950408889634  # 1 / ln(2)


def fast_exp(x):
    r, k = reduce(x)
    return reconstruct(poly(r), k)


# --OPTION--
def reduce(x):
    # -- NOTE --
    # Range reduction. Input: x, a float32 array in [-87, 88]. Return (r, k): k integer-valued
    # (float32 or an integer array) and r = x - k*ln2, the reduced argument that `poly` gets.
    # The rounding offset decides the interval of r (0.5 centres it on 0, the best for a
    # polynomial); in float32, k*LN2 is rounded, and that error grows with |k| (up to 127):
    # splitting ln2 into a short high part and a low part (Cody-Waite) keeps r exact.
    # Allowed: + - * / ** (integer constants), np.floor/ceil/rint/trunc, np.where, np.minimum,
    # np.maximum, .astype, .view. Forbidden: np.exp/exp2/expm1/power, math.*, Python
    # if/loops/indexing on the array (no table lookups), float64 values.
    # Cost per element: + - * and most operations 1, / and sqrt 4 (README.md has the table).
    # -- NOTE --
    k = np.floor(x * LOG2E + 0.3)
    r = x - k * LN2
    return r, k


# --OPTION--
def poly(r):
    # -- NOTE --
    # exp(r) for the reduced argument r (a float32 array, about [-0.35, 0.35] when the
    # reduction rounds to nearest). Here: the Taylor polynomial of degree 5 in Horner form,
    # 5 multiplications and 5 additions. Fewer terms cost less and are less accurate; minimax
    # (Remez) coefficients are more accurate than Taylor ones at the same degree; float32
    # rounding limits the maximum relative error to about 6e-8 (7.2 digits).
    # -- NOTE --
    p = 0.008333333
    p = p * r + 0.041666668
    p = p * r + 0.16666667
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p


# --OPTION--
def reconstruct(p, k):
    # -- NOTE --
    # exp(x) = 2**k * p. np.ldexp(p, n) scales by 2**n exactly (n an integer array) and costs 1,
    # like the conversion .astype(np.int32). Building 2**k from the float32 bit pattern
    # ((k + 127) << 23, then .view(np.float32)) is another way. The result must stay finite.
    # -- NOTE --
    return np.ldexp(p, k.astype(np.int32))
