"""The embedded demo workload: a speculative decoder with an mHC block that feeds a monitor.

It is a client of the monitor: `run_workload` drives any object with the six
`record_*` calls, and nothing in this package imports the rest of mhc_monitor.
"""

from __future__ import annotations

from .engine import Recorder, StepReport, Workload, run_workload

__all__ = ["Recorder", "StepReport", "Workload", "run_workload"]
