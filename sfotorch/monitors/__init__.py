r"""Gradient-norm monitors: estimates of ‖∇f(θ)‖ for the stage rule of Algorithm 2.

Each monitor has a ``name`` and ``measure() -> Measurement`` (``norm``, ``cost`` in gradient
evaluations spent beyond training, ``monitor``, and optional fields: ``sq_norm``, ``raw_norm``,
``trace_cov``, ``lower``/``upper``/``margin``/``confidence``, ``samples_used``, ``clamped``,
``undecided``). A monitor with ``uses_eps_m = True`` is called as ``measure(eps_m=ε_m)``.

============================ ================================ ======================== ================
monitor                      estimate                          cost per check           leaves a trace?
============================ ================================ ======================== ================
:class:`ExactMonitor`        ‖∇f‖ over all n samples, eval     n                        no
:class:`SubsampledMonitor`   ‖g_S‖² − (1−s/n) tr Σ̂/s, margin   s                        no
:class:`SequentialMonitor`   the same on a subset doubled      s_0 … n, as the decision no
                             until ‖∇f‖ ≶ ε_m is decided       needs
:class:`DebiasedMonitor`     mean of ‖g_B‖² − c tr Σ̂/b         0 (training batches)     replaces backward
:class:`ScreenedMonitor`     the debiased window rules a check 0, or the sequential   its screen's backward
                             out, else the sequential test     test's where it decides
============================ ================================ ======================== ================
"""

from .base import GradientNormMonitor, Measurement, leave_no_trace
from .debiased import DebiasedMonitor
from .exact import ExactMonitor
from .moments import GradientMoments
from .screened import ScreenedMonitor
from .sequential import SequentialMonitor, block_estimate
from .subsampled import SubsampledMonitor, confidence_radius

__all__ = [
    "DebiasedMonitor",
    "ExactMonitor",
    "GradientMoments",
    "GradientNormMonitor",
    "Measurement",
    "ScreenedMonitor",
    "SequentialMonitor",
    "SubsampledMonitor",
    "block_estimate",
    "confidence_radius",
    "leave_no_trace",
]
