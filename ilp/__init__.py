"""COSMA-style exact planning with OR-Tools CP-SAT (docs/ilp.md).

* :func:`solve_ilp` - the solver: candidate schedules x the fixed-schedule model (compact
  residency segments + ``add_no_overlap_2d`` over (step, address)), window LNS for large graphs,
  lower bounds, hint from a baseline plan.
* :mod:`memmap.ilp.model` - the model (one function per constraint family), decode/encode.
"""

from memmap.ilp.model import FixedScheduleModel, Instance, decode, encode, make_instance
from memmap.ilp.solve import IlpOptions, relaxation_bound, solve_ilp

__all__ = ["solve_ilp", "IlpOptions", "relaxation_bound", "FixedScheduleModel", "Instance", "make_instance",
           "decode", "encode"]
