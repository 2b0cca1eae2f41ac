"""The Python API: `gradcheck check` and `gradcheck sweep` as functions on the command line's own pipeline,
and the assertion helper of the pytest plugin. Re-exported lazily by gradcheck_cli itself (see its __init__)."""

from gradcheck_cli.api.checking import check
from gradcheck_cli.api.matching import assert_gradients_match, gradients_report
from gradcheck_cli.api.sweeping import SweepReport, sweep

__all__ = ("SweepReport", "assert_gradients_match", "check", "gradients_report", "sweep")
