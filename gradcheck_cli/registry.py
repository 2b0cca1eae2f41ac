"""The names the command line offers, kept free of numpy so that building the CLI imports nothing heavy.

differences.METHODS must list exactly METHOD_NAMES (a test holds them together).
"""

METHOD_NAMES = ("central", "forward", "backward", "five-point", "richardson", "complex-step")
DTYPES = ("float64", "float32")
REDUCTIONS = ("mean", "sum", "none")
LOSSES = ("cross_entropy", "mse")
