"""A minimal seed for ge: a predictor of y from x, evolved segment by segment.

Everything above the first marker is the header and never changes.
"""


# --OPTION--
def features(x):
    # -- NOTE --
    # Return a list of floats computed from x. The model is linear in these features.
    # -- NOTE --
    return [1.0, x, x * x]


# --OPTION--
def predict(x, weights):
    return sum(w * f for w, f in zip(weights, features(x)))


# --OPTION--
def fit(xs, ys, steps=200, lr=0.05):
    weights = [0.0] * len(features(0.0))
    for _ in range(steps):
        grad = [0.0] * len(weights)
        for x, y in zip(xs, ys):
            error = predict(x, weights) - y
            for i, f in enumerate(features(x)):
                grad[i] += 2 * error * f / len(xs)
        weights = [w - lr * g for w, g in zip(weights, grad)]
    return weights
