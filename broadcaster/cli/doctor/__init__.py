"""``broadcaster doctor``: the operator's latency audit (seed 004 §5, "Trustless Verification").

Static checks read ``/proc`` and ``/sys`` under a root (:class:`Host`) and return
:class:`Finding` values; the jitter canary (:func:`run_canary`) measures event-loop stalls on
this host; :mod:`broadcaster.cli.doctor.report` prints both. See ``docs/doctor.md``.
"""

from broadcaster.cli.doctor.canary import CanaryResult, Distribution, Histogram, judge, run_canary
from broadcaster.cli.doctor.command import add_doctor_arguments, run_doctor
from broadcaster.cli.doctor.model import Finding, Host, Status, format_cpulist, parse_cpulist
from broadcaster.cli.doctor.report import CHECKS, exit_code, render_json, render_text, run_checks

__all__ = [
    "CHECKS",
    "CanaryResult",
    "Distribution",
    "Finding",
    "Histogram",
    "Host",
    "Status",
    "add_doctor_arguments",
    "exit_code",
    "format_cpulist",
    "judge",
    "parse_cpulist",
    "render_json",
    "render_text",
    "run_canary",
    "run_checks",
    "run_doctor",
]
