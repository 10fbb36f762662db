"""Property tests: thousands of random graphs x budgets x modes through every baseline (and the
prefetch pass); the independent verifier must accept every plan."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memmap.budgets import compute_budgets
from memmap.cost import inplace_shares, simulate
from memmap.ir.synthetic import random_graph
from memmap.prefetch import hoist_prefetches
from memmap.problem import Problem, Target
from memmap.solvers import BASELINES, SOLVERS
from memmap.verify import verify_plan


def check_all(g, mode, activations_only, align, seed=0, solvers=BASELINES, shares=None):
    """Every solver in ``solvers`` at M_R, M_H and M_P; every plan (and its prefetch-hoisted
    form) verified. Returns the number of plans checked; appends each plan's number of shared
    in-place pairs to the list ``shares`` when given. The ``ilp`` runs with a 1 s limit."""
    base = Problem(g, Target("t", 1 << 40, alignment_bytes=align), mode, activations_only)
    bud = compute_budgets(base)
    # the spill-free allocation behind M_P must really fit in M_P
    assert max((o + base.alloc_size[v] for v, o in bud.offsets.items()), default=0) <= bud.m_p_bytes
    n = 0
    for cap in sorted({bud.m_r_bytes, bud.m_h_bytes, bud.m_p_bytes}):
        if cap <= 0:
            continue
        p = Problem(g, Target("t", cap, alignment_bytes=align), mode, activations_only)
        for name in solvers:
            kw = {"time_limit_s": 1.0} if name == "ilp" else {}
            plan = SOLVERS[name](p, seed=seed, **kw)
            if shares is not None:
                shares.append(len(inplace_shares(plan)))
            for pl in (plan, hoist_prefetches(plan)):
                r = verify_plan(pl)
                assert r.ok, (g.name, mode, activations_only, cap, name, r.errors)
                m = simulate(pl)
                assert m["noncompulsory_bytes"] >= 0
                assert m["peak_scratchpad_bytes"] <= cap
                n += 1
    return n


@pytest.mark.parametrize("chunk", range(4))
def test_many_random_graphs(chunk):
    """1000 seeded graphs (250 per chunk) x {M_R, M_H, M_P} x 2 modes x 3 baselines."""
    total = 0
    for seed in range(chunk * 250, (chunk + 1) * 250):
        g = random_graph(seed, num_ops=5 + seed % 23, max_inputs=1 + seed % 4,
                         max_outputs=1 + seed % 3, shuffle_schedule=seed % 3 == 0)
        mode = ("strict", "tiered")[seed % 2]
        total += check_all(g, mode, activations_only=seed % 5 == 0, align=(1, 16, 64)[seed % 3])
    assert total > 1000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), num_ops=st.integers(1, 30), max_inputs=st.integers(1, 5),
       max_outputs=st.integers(1, 3), params=st.integers(0, 5), consts=st.integers(0, 3),
       mode=st.sampled_from(["strict", "tiered"]), ao=st.booleans(),
       align=st.sampled_from([1, 8, 64, 256]), size=st.sampled_from([16, 1000, 100_000]),
       inplace=st.sampled_from([0.0, 0.0, 0.5]))
def test_hypothesis_graphs(seed, num_ops, max_inputs, max_outputs, params, consts, mode, ao, align, size,
                           inplace):
    """Random graphs, a third of them with in-place pairs (docs/semantics.md)."""
    g = random_graph(seed, num_ops=num_ops, max_inputs=max_inputs, max_outputs=max_outputs,
                     num_params=params, num_consts=consts, max_size_bytes=size,
                     shuffle_schedule=seed % 2 == 0, inplace_prob=inplace)
    check_all(g, mode, ao, align, seed=seed)
