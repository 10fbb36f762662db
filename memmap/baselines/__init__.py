"""Strong baselines: (a) XLA-MSA-like greedy, (b) XLA schedule + Belady + best fit,
(c) min-peak schedule + Belady + best fit."""

from memmap.baselines.belady import solve_belady
from memmap.baselines.minpeak import solve_minpeak
from memmap.baselines.msa import solve_msa

__all__ = ["solve_belady", "solve_minpeak", "solve_msa"]
