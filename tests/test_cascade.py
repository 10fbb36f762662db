"""Cascade representation and pass analysis (memmap.cascade.einsum / library / passes)."""

from __future__ import annotations

import math

import pytest

from memmap.cascade.einsum import CascadeError, Index, TensorRef, cascade, einsum
from memmap.cascade.library import (
    ATTENTION_CASCADES,
    attention_1pass,
    attention_2pass,
    attention_3pass,
    toy_chain,
    toy_dependent,
    toy_dependent_rewritten,
    toy_independent,
)
from memmap.cascade.passes import analyze_passes

EXT = {"E": 64, "F": 64, "M": 1024, "P": 512, "M0": 256, "M1": 4, "K": 10}


def test_parse_and_print_round_trip():
    for c in ATTENTION_CASCADES.values():
        for e in c().einsums:
            assert einsum(str(e)) == e
    ref = TensorRef.parse("RNV[f,M1,p]")
    assert ref.indices == (Index("f"), Index("m1", final=True), Index("p"))
    e = einsum("RM[m1+1,p] = max(RM[m1,p], BQK[m1,p])")
    assert e.op == "max" and e.is_recurrence and e.reduced_ranks == ()
    assert einsum("QK[m,p] = Q[e,p] * K[e,m] :: +").reduced_ranks == ("e",)


@pytest.mark.parametrize(
    "text, match",
    [
        ("GM[p] = QK[m,p]", "no '::' operator"),
        ("SN[m,p] = QK[m,p] :: +", "no rank is reduced"),
        ("Z[p] = pow(A[p], B[p])", "bad Einsum right-hand side"),
        ("Z[p] = A[p] :: min", "unknown reduce operator"),
        ("Z[P] = A[p]", "output cannot be indexed"),
    ],
)
def test_malformed_einsums_name_the_problem(text, match):
    with pytest.raises(CascadeError, match=match):
        einsum(text)


def test_cascade_validation():
    with pytest.raises(CascadeError, match="defined twice"):
        cascade("dup", "Y[] = A[k] :: +\nY[] = A[k] :: max", outputs=("Y",))
    with pytest.raises(CascadeError, match="no initial value"):
        cascade("noinit", "S[k+1] = S[k] + A[k]\nY[] = S[K] * S[K]", outputs=("Y",))
    with pytest.raises(CascadeError, match="has ranks"):
        cascade("ranks", "Y[p] = A[k,p] :: +\nZ[p] = Y[p] * A[p,k] :: +", outputs=("Z",))
    assert attention_1pass().state_tensors == {"RM", "RD", "RNV"}
    assert attention_3pass().inputs == ("Q", "K", "V")


def test_attention_pass_counts_3_2_2_1():
    counts = {name: analyze_passes(make()).num_passes for name, make in ATTENTION_CASCADES.items()}
    assert counts == {"3-pass": 3, "3-pass deferred division": 2, "2-pass": 2, "1-pass": 1}


def test_3pass_einsum_assignment_and_consequences():
    a = analyze_passes(attention_3pass())
    assert dict(a.einsum_pass) == {"QK": 1, "GM": 1, "SN": 2, "SD": 2, "A": 3, "AV": 3}
    assert {t.tensor for t in a.crossing} == {"QK", "GM", "SN", "SD"}
    # Without spilling a query needs its whole QK row (M words) plus GM on chip.
    assert a.footprint_words(EXT) == EXT["M"] + 1
    # Otherwise QK and SN are each written once and read once more, GM/SD too (per query).
    pm, p = EXT["P"] * EXT["M"], EXT["P"]
    assert a.spill_traffic_words(EXT) == 4 * pm + 4 * p


def test_2pass_footprint_scales_with_tiles_not_keys():
    a = analyze_passes(attention_2pass())
    assert a.footprint_words(EXT) == EXT["M1"] * (EXT["F"] + 2) + 1  # BQK, LSD, LSNV per tile + GM
    one = analyze_passes(attention_1pass())
    assert one.footprint_words(EXT) == 0 and one.spill_traffic_words(EXT) == 0 and one.crossing == ()


def test_toy_cascades():
    assert analyze_passes(toy_independent(), "k").num_passes == 1
    assert analyze_passes(toy_dependent(), "k").num_passes == 2
    assert analyze_passes(toy_dependent_rewritten(), "k").num_passes == 1
    a = analyze_passes(toy_dependent(), "k")
    assert a.spill_traffic_words(EXT) == EXT["K"] + 2  # A re-read once; Y written and read once
    for n in range(5):
        assert analyze_passes(toy_chain(n), "k").num_passes == n + 1


def test_passes_depend_on_the_analysed_rank():
    # Over the embedding rank e only the QK contraction walks the fiber: one pass.
    assert analyze_passes(attention_3pass(), "e").num_passes == 1


def test_running_state_depending_on_its_own_full_reduction_is_rejected():
    c = cascade(
        "bad",
        """
        T[] = S[k,p] :: +
        U[k,p] = A[k,p] * T[]
        S[k+1,p] = S[k,p] + U[k,p]
        Y[p] = S[K,p] * S[K,p]
        """,
        outputs=("Y",),
        initial={"S": 0.0},
    )
    with pytest.raises(CascadeError, match="grows without bound"):
        analyze_passes(c, "k")


def test_initial_values():
    assert attention_1pass().initial["RM"] == -math.inf
