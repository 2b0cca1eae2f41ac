"""The Python API: `gradcheck check`, `sweep`, `explain` and `diagnose` as functions on the command line's own
pipeline, and the assertion helper of the pytest plugin. Re-exported lazily by gradcheck_cli itself (see its
__init__)."""

from gradcheck_cli.api.checking import check
from gradcheck_cli.api.diagnosing import diagnose
from gradcheck_cli.api.explaining import Explanation, explain
from gradcheck_cli.api.matching import assert_gradients_match, gradients_report
from gradcheck_cli.api.sweeping import SweepReport, sweep

__all__ = ("Explanation", "SweepReport", "assert_gradients_match", "check", "diagnose", "explain", "gradients_report",
           "sweep")
