"""Hand-checkable timings: bandwidth 1 byte/s and 1 flop/s, as XLA's MSA tests do."""

import pytest

from memmap.cost import simulate, traffic
from memmap.plan import Plan
from memmap.prefetch import hoist_prefetches
from memmap.problem import Problem, Target
from memmap.verify import verify_plan
from tests.test_verify import good_chain_plan
from tests.helpers import chain_graph

SLOW = Target("slow", 1024, alignment_bytes=64, offchip_bandwidth_bytes_per_s=1.0,
              onchip_bandwidth_bytes_per_s=1e18, compute_flops_per_s=1.0, dma_engines=1)


def test_traffic_counts():
    m = traffic(good_chain_plan())
    assert m["load_bytes"] == 400 and m["writeback_bytes"] == 100
    assert m["compulsory_bytes"] == 500 and m["noncompulsory_bytes"] == 0


def test_timeline_with_stalls_by_hand():
    plan = good_chain_plan()
    plan = Plan.assemble(Problem(plan.problem.graph, SLOW, "strict"), plan.schedule,
                         plan.residencies, plan.transfers, solver="hand")
    m = simulate(plan)
    # step 0: load x 100 s (stall), op a 10 s; step 1: load w 300 s (stall), op b 20 s;
    # writeback y1 100 s after the last op.
    assert m["modeled_time_s"] == pytest.approx(530)
    assert m["stall_time_s"] == pytest.approx(500)
    assert m["operator_time_s"] == pytest.approx(30)
    assert m["peak_scratchpad_bytes"] == 832 and m["peak_live_bytes"] == 704
    hoisted = hoist_prefetches(plan)
    assert verify_plan(hoisted).ok
    assert [r.start for r in hoisted.residencies if r.value == 1] == [0]
    mh = simulate(hoisted)
    # w's load now starts at step 0 behind x's: done at 400; op b runs 400..420; writeback to 520
    assert mh["modeled_time_s"] == pytest.approx(520)
    assert mh["num_prefetches"] == 1
    assert mh["noncompulsory_bytes"] == m["noncompulsory_bytes"]


def test_tiered_slow_reads_are_traffic_and_time():
    g = chain_graph()
    p = Problem(g, SLOW, "tiered")
    plan = Plan.assemble(p, (0, 1), [], [], solver="hand")
    m = simulate(plan)
    # x read (100) + y0 written (200) and read (200) + w read (300) + y1 written (100)
    assert m["slow_read_bytes"] == 600 and m["slow_write_bytes"] == 300
    assert m["noncompulsory_bytes"] == 400   # y0's round trip
    # op a: max(10 flops, 300 bytes slow) = 300 s ; op b: max(20, 600) = 600 s
    assert m["modeled_time_s"] == pytest.approx(900)
