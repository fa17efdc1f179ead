"""Online bin packing: the priority with which an arriving item goes into each open bin.

Items arrive one at a time and must be placed before the next one is seen. For each item,
`priority` gets the remaining capacities of the bins it fits in and returns one score per bin;
the item goes into the bin with the highest score (the first one on a tie). evaluate.py packs the
OR3 and Weibull 5k instances this way and scores the bins used above the L1 lower bound.
"""

import numpy as np  # noqa: F401  (for the evolved code)


# --OPTION--
def priority(item, bins):
    # -- NOTE --
    # item: the size of the arriving item (an int). bins: a 1-D integer numpy array, the
    # remaining capacity of every bin the item fits in (each >= item), in bin order; bins never
    # used are included, at full capacity (150 for OR3, 100 for Weibull 5k), after or among the
    # used ones. Return a 1-D array of len(bins) finite numbers: the item goes into the bin with
    # the highest one. Fewer bins used is better; the seed is best fit (the fullest bin that
    # fits). Only numpy and math are available; no files, no state about future items exists.
    # -- NOTE --
    gap = bins - item  # the room each bin would have left
    small = (gap > 0) & (gap < 5)  # a sliver few items will fill
    return -gap - 0.5 * small  # weight < 1: the same choices as plain best fit
