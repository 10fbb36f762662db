"""The attention cascades of FuseMax (Nayak et al., MICRO 2024) and small toy cascades.

Rank names: ``e`` (query/key embedding, extent E), ``f`` (value embedding, F), ``m`` (keys, M),
``p`` (queries, P); ``m`` is partitioned into ``m1`` (tiles, M1) and ``m0`` (elements of a tile,
M0) in the 2-pass and 1-pass cascades. ``BK``/``BV`` are K/V viewed as tiles
(``BK[e,m1,m0] = K[e, m1*M0 + m0]``). Scaling by 1/sqrt(E) is folded into Q (as in the paper's
cascades, which omit it).
"""

from __future__ import annotations

import math

from memmap.cascade.einsum import Cascade, cascade

__all__ = [
    "attention_3pass",
    "attention_3pass_deferred",
    "attention_2pass",
    "attention_1pass",
    "ATTENTION_CASCADES",
    "toy_independent",
    "toy_dependent",
    "toy_chain",
    "toy_dependent_rewritten",
]

_M = {"m": ("m1", "m0")}


def attention_3pass() -> Cascade:
    """Softmax as in PyTorch/TensorFlow/FLAT: global max, exp and sum, divide, then A x V."""
    return cascade(
        "3-pass",
        """
        QK[m,p] = Q[e,p] * K[e,m] :: +
        GM[p]   = QK[m,p] :: max
        SN[m,p] = exp(QK[m,p] - GM[p])
        SD[p]   = SN[m,p] :: +
        A[m,p]  = SN[m,p] / SD[p]
        AV[f,p] = A[m,p] * V[f,m] :: +
        """,
        outputs=("AV",),
    )


def attention_3pass_deferred() -> Cascade:
    """The 3-pass cascade with the division deferred after the A x V contraction."""
    return cascade(
        "3-pass deferred division",
        """
        QK[m,p]  = Q[e,p] * K[e,m] :: +
        GM[p]    = QK[m,p] :: max
        SN[m,p]  = exp(QK[m,p] - GM[p])
        SD[p]    = SN[m,p] :: +
        SNV[f,p] = SN[m,p] * V[f,m] :: +
        AV[f,p]  = SNV[f,p] / SD[p]
        """,
        outputs=("AV",),
    )


def attention_2pass() -> Cascade:
    """TileFlow-style: per-tile max/numerator/denominator, then a correction pass over tiles."""
    return cascade(
        "2-pass",
        """
        QK[m1,m0,p]   = Q[e,p] * BK[e,m1,m0] :: +
        BQK[m1,p]     = QK[m1,m0,p] :: max
        LSN[m1,m0,p]  = exp(QK[m1,m0,p] - BQK[m1,p])
        LSD[m1,p]     = LSN[m1,m0,p] :: +
        LSNV[f,m1,p]  = LSN[m1,m0,p] * BV[f,m1,m0] :: +
        GM[p]         = BQK[m1,p] :: max
        PRM[m1,p]     = exp(BQK[m1,p] - GM[p])
        SD[p]         = LSD[m1,p] * PRM[m1,p] :: +
        SNV[f,p]      = LSNV[f,m1,p] * PRM[m1,p] :: +
        AV[f,p]       = SNV[f,p] / SD[p]
        """,
        outputs=("AV",),
        partitions=_M,
    )


def attention_1pass() -> Cascade:
    """FuseMax / FlashAttention-2: running max RM, denominator RD, numerator x V RNV."""
    return cascade(
        "1-pass",
        """
        QK[m1,m0,p]    = Q[e,p] * BK[e,m1,m0] :: +
        BQK[m1,p]      = QK[m1,m0,p] :: max
        RM[m1+1,p]     = max(RM[m1,p], BQK[m1,p])
        SLN[m1,m0,p]   = exp(QK[m1,m0,p] - RM[m1+1,p])
        SLD[m1,p]      = SLN[m1,m0,p] :: +
        SLNV[f,m1,p]   = SLN[m1,m0,p] * BV[f,m1,m0] :: +
        PRM[m1,p]      = exp(RM[m1,p] - RM[m1+1,p])
        SPD[m1,p]      = RD[m1,p] * PRM[m1,p]
        RD[m1+1,p]     = SLD[m1,p] + SPD[m1,p]
        SPNV[f,m1,p]   = RNV[f,m1,p] * PRM[m1,p]
        RNV[f,m1+1,p]  = SLNV[f,m1,p] + SPNV[f,m1,p]
        AV[f,p]        = RNV[f,M1,p] / RD[M1,p]
        """,
        outputs=("AV",),
        partitions=_M,
        initial={"RM": -math.inf, "RD": 0.0, "RNV": 0.0},
    )


#: name -> constructor, in the order of the paper's discussion.
ATTENTION_CASCADES = {
    "3-pass": attention_3pass,
    "3-pass deferred division": attention_3pass_deferred,
    "2-pass": attention_2pass,
    "1-pass": attention_1pass,
}


def toy_independent() -> Cascade:
    """Two reductions of the same fiber that do not depend on each other: 1 pass."""
    return cascade(
        "toy: independent reductions",
        """
        Y[]  = A[k] :: +
        Z[]  = A[k] :: max
        W[]  = Y[] / Z[]
        """,
        outputs=("W",),
    )


def toy_dependent() -> Cascade:
    """``Z = sum_k A[k] * Y`` with ``Y = sum_k A[k]``: the second traversal needs Y: 2 passes."""
    return cascade(
        "toy: dependent reduction",
        """
        Y[]  = A[k] :: +
        B[k] = A[k] * Y[]
        Z[]  = B[k] :: +
        """,
        outputs=("Z",),
    )


def toy_dependent_rewritten() -> Cascade:
    """:func:`toy_dependent` rewritten algebraically (``Z = Y * sum_k A[k]``): 1 pass."""
    return cascade(
        "toy: dependent reduction, rewritten",
        """
        Y[]  = A[k] :: +
        Z[]  = Y[] * Y[]
        """,
        outputs=("Z",),
    )


def toy_chain(n: int) -> Cascade:
    """``n`` chained full-fiber dependencies: ``X_{i+1} = sum_k A[k] * X_i``; n+1 passes."""
    if n < 0:
        raise ValueError(f"toy_chain: n must be >= 0, got {n}")
    lines = ["X0[] = A[k] :: +"]
    for i in range(n):
        lines.append(f"T{i}[k] = A[k] * X{i}[]")
        lines.append(f"X{i + 1}[] = T{i}[k] :: +")
    return cascade(f"toy: chain of {n}", "\n".join(lines), outputs=(f"X{n}",))
