"""Fixed-lifetime allocation (ilp/alloc.py, ilp/alloc_cli.py): hand-made instances, random
ones cross-checked against CP-SAT, bad CSV rows, and two MiniMalloc benchmarks end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from memmap.errors import BadInputError
from memmap.ilp import alloc as alloc_mod
from memmap.ilp.alloc import (AllocProblem, _branch_and_bound, _cpsat, _Ordering, _sections,
                              _Space, check_alloc, pack_buffers, peak_live, read_minimalloc_csv,
                              solve_alloc)
from memmap.ilp.alloc_cli import capacity_from_name, main

CHALLENGING = Path(__file__).resolve().parent / "data" / "minimalloc"   # google/minimalloc (tests/data/SOURCES.md)


def _csv(tmp_path: Path, text: str, name: str = "p.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _exact(p: AllocProblem, capacity: int):
    """Run the branch and bound alone (no greedy shortcut); sizes are used unscaled. Returns
    ``(offsets | None, proved infeasible, nodes)``."""
    s0, s1, n_sections = _sections(p.lower, p.upper)
    width = [u - lo for lo, u in zip(p.lower, p.upper)]
    import time
    t0 = time.perf_counter()
    return _branch_and_bound(s0, s1, width, list(p.size_bytes), n_sections, capacity,
                             t0 + 20, None, t0)[:3]


# A zero-waste instance: at every step the live buffers tile [0, 4) exactly.
ZERO_WASTE = AllocProblem.from_lists(
    lower=[0, 0, 1, 2, 0, 3],
    upper=[2, 1, 3, 4, 3, 4],
    size_bytes=[2, 1, 1, 1, 1, 2])


def test_zero_waste_instance_is_placed_optimally():
    assert peak_live(ZERO_WASTE) == (4, 0)
    res = solve_alloc(ZERO_WASTE, 4)
    assert res.status == "OPTIMAL"
    assert res.height_bytes == 4
    assert check_alloc(ZERO_WASTE, 4, res.offsets) == []
    sol, infeasible, _ = _exact(ZERO_WASTE, 4)
    assert not infeasible and check_alloc(ZERO_WASTE, 4, sol) == []


def test_infeasible_by_peak_names_the_step():
    p = AllocProblem.from_lists([0, 1, 2], [2, 3, 4], [3, 3, 1], ids=["a", "b", "c"])
    res = solve_alloc(p, 5)
    assert res.status == "INFEASIBLE" and res.offsets is None
    assert "step 1" in res.culprits[0] and "'a'" in res.culprits[0] and "'b'" in res.culprits[0]


def test_buffer_larger_than_capacity_is_infeasible():
    res = solve_alloc(AllocProblem.from_lists([0], [1], [9], ids=["big"]), 8)
    assert res.status == "INFEASIBLE" and "'big'" in res.culprits[0]


def test_exact_search_proves_infeasibility_by_exhaustion():
    """Below the peak the branch and bound (run without the peak shortcut) must exhaust its
    search and prove that nothing fits, with every pruning rule on."""
    sol, infeasible, nodes = _exact(ZERO_WASTE, 3)
    assert sol is None and infeasible and nodes >= 1


def test_check_alloc_reports_overlaps_and_bounds():
    p = AllocProblem.from_lists([0, 1], [2, 3], [2, 2], ids=["x", "y"])
    assert check_alloc(p, 4, [0, 2]) == []
    errs = check_alloc(p, 4, [0, 1])
    assert len(errs) == 1 and "'x'" in errs[0] and "'y'" in errs[0]
    assert any("outside" in e for e in check_alloc(p, 3, [0, 2]))
    assert check_alloc(p, 4, [0]) != []


def test_zero_size_buffers_take_no_space():
    p = AllocProblem.from_lists([0, 0, 0], [2, 2, 2], [0, 4, 0])
    res = solve_alloc(p, 4)
    assert res.status == "OPTIMAL" and check_alloc(p, 4, res.offsets) == []


def test_gcd_scaling_keeps_offsets_in_bytes():
    p = AllocProblem.from_lists([0, 0, 1], [1, 2, 2], [1024, 2048, 1024])
    res = solve_alloc(p, 3072)
    assert res.placed and check_alloc(p, 3072, res.offsets) == []
    assert all(o % 1024 == 0 for o in res.offsets)


@pytest.mark.parametrize("seed", range(4))
def test_exact_search_agrees_with_cpsat_on_random_tight_instances(seed):
    """Capacity = peak live bytes: the branch and bound finds a placement iff CP-SAT does."""
    rng = random.Random(seed)
    for _ in range(15):
        n = rng.randint(4, 9)
        lo = [rng.randint(0, 5) for _ in range(n)]
        hi = [x + rng.randint(1, 4) for x in lo]
        sz = [rng.choice([1, 2, 3, 5]) for _ in range(n)]
        p = AllocProblem.from_lists(lo, hi, sz)
        cap = peak_live(p)[0]
        sol, infeasible, _ = _exact(p, cap)
        status, _ = _cpsat(lo, hi, sz, cap, None, 10.0, 1, 0, None)
        assert infeasible == (status == "INFEASIBLE"), (lo, hi, sz, cap)
        if not infeasible:
            assert check_alloc(p, cap, sol) == []


def _random_instance(rng: random.Random, n: int) -> AllocProblem:
    lo = [rng.randint(0, 8) for _ in range(n)]
    hi = [x + rng.randint(1, 5) for x in lo]
    return AllocProblem.from_lists(lo, hi, [rng.choice([1, 2, 3, 4, 5, 7]) for _ in range(n)])


@pytest.mark.parametrize("seed", range(3))
def test_exact_search_with_slack_agrees_with_cpsat(seed):
    """Capacity = peak + 1 and larger instances (decomposition, backjumps, hatless pruning)."""
    rng = random.Random(100 + seed)
    for _ in range(15):
        p = _random_instance(rng, rng.randint(8, 14))
        cap = peak_live(p)[0] + rng.choice([0, 1])
        sol, infeasible, _ = _exact(p, cap)
        status, _ = _cpsat(list(p.lower), list(p.upper), list(p.size_bytes), cap, None, 10.0, 1,
                           0, None)
        assert infeasible == (status == "INFEASIBLE"), (p.lower, p.upper, p.size_bytes, cap)
        if not infeasible:
            assert check_alloc(p, cap, sol) == []


def _fragmenting_instance(rng: random.Random) -> tuple[AllocProblem, int]:
    """Random buffers, then one filler per step so that every step is exactly full: with
    capacity = peak some of these cannot be placed (fragmentation), which the exact search must
    prove by exhaustion."""
    n, steps = rng.randint(6, 12), rng.randint(4, 8)
    lo = [rng.randint(0, steps - 1) for _ in range(n)]
    hi = [rng.randint(x + 1, min(steps, x + 3)) for x in lo]
    sz = [rng.choice([1, 2, 3, 4, 5]) for _ in range(n)]
    live = [sum(z for a, b, z in zip(lo, hi, sz) if a <= t < b) for t in range(steps)]
    cap = max(live)
    for t in range(steps):
        if live[t] < cap:
            lo.append(t)
            hi.append(t + 1)
            sz.append(cap - live[t])
    return AllocProblem.from_lists(lo, hi, sz), cap


def _agree_with_cpsat(instances) -> int:
    """Exact search and CP-SAT agree on every instance; returns how many were infeasible."""
    infeasible_count = 0
    for p, cap in instances:
        sol, infeasible, _ = _exact(p, cap)
        status, _ = _cpsat(list(p.lower), list(p.upper), list(p.size_bytes), cap, None, 10.0, 1,
                           0, None)
        assert infeasible == (status == "INFEASIBLE"), (p.lower, p.upper, p.size_bytes, cap)
        if infeasible:
            infeasible_count += 1
        else:
            assert sol is not None and check_alloc(p, cap, sol) == []
    return infeasible_count


@pytest.mark.parametrize("seeds", [range(0, 150), range(150, 300)])
def test_exact_search_proves_fragmentation_infeasibility_like_cpsat(seeds):
    """Capacity = peak with every step full: the search places exactly the instances CP-SAT
    places and proves the others infeasible (at least two per batch of seeds here)."""
    instances = [_fragmenting_instance(random.Random(seed)) for seed in seeds]
    assert _agree_with_cpsat(instances) >= 2


def test_cli_proves_fragmentation_infeasibility_by_exhaustive_search(tmp_path, capsys):
    """Exit 3 although the peak fits: only the exhaustive branch and bound can tell."""
    p, cap = _fragmenting_instance(random.Random(36))          # infeasible (CP-SAT agrees)
    assert peak_live(p)[0] == cap
    rows = "".join(f"{k},{a},{b},{z}\n" for k, (a, b, z) in
                   enumerate(zip(p.lower, p.upper, p.size_bytes)))
    path = _csv(tmp_path, "id,lower,upper,size\n" + rows, "frag.csv")
    assert main([str(path), "--capacity", str(cap)]) == 3
    assert "exhaustive search" in capsys.readouterr().err
    status, _ = _cpsat(list(p.lower), list(p.upper), list(p.size_bytes), cap, None, 10.0, 1, 0,
                       None)
    assert status == "INFEASIBLE"


def test_search_without_room_to_reorder_parts_agrees_with_cpsat(monkeypatch):
    """With no room on the part-order stack every new part keeps its parent's order (the
    fallback path): still exact."""
    monkeypatch.setattr(alloc_mod, "_ORDER_ROOM_MAX", 0)
    rng = random.Random(11)
    instances = [_fragmenting_instance(random.Random(seed)) for seed in range(150, 230)]
    instances += [(p, peak_live(p)[0]) for p in (_random_instance(rng, 14) for _ in range(20))]
    assert _agree_with_cpsat(instances) >= 1


def test_parts_are_preordered_by_gkey_then_total_then_skey():
    """``_preorder_part`` sorts a slice of the order stack by (gkey, tkey, skey), in place."""
    import numpy as np
    rng = random.Random(5)
    for m in (0, 1, 2, 7, 33, 100):
        n = m + 6
        gkey = np.array([rng.randint(0, 2) for _ in range(n)], dtype=np.int64)
        tkey = np.array([-rng.randint(0, 4) for _ in range(n)], dtype=np.int64)
        skey = np.array(rng.sample(range(n), n), dtype=np.int64)
        olist = np.array(rng.sample(range(n), n), dtype=np.int64)
        before = olist.copy()
        alloc_mod._preorder_part(olist, 3, 3 + m, gkey, tkey, skey, np.zeros(n, dtype=np.int64))
        expect = sorted(before[3:3 + m].tolist(), key=lambda j: (gkey[j], tkey[j], skey[j]))
        assert olist[3:3 + m].tolist() == expect
        assert olist[:3].tolist() == before[:3].tolist()
        assert olist[3 + m:].tolist() == before[3 + m:].tolist()


@pytest.mark.skipif(alloc_mod._numba is None, reason="numba not installed: nothing to compare")
def test_compiled_kernel_matches_the_interpreted_one():
    """The numba-compiled kernel and its Python source take the same path: same status, node
    count and offsets on every instance."""
    rng = random.Random(7)
    compiled = alloc_mod._search_kernel
    for _ in range(12):
        p = _random_instance(rng, rng.randint(6, 12))
        cap = peak_live(p)[0]
        s0, s1, n_sections = _sections(p.lower, p.upper)
        width = [u - lo for lo, u in zip(p.lower, p.upper)]
        for heuristic in ("TWA", "WAT", "AW"):      # T first, T last, no T at all
            runs = []
            for kernel in (compiled, compiled.py_func):
                alloc_mod._search_kernel = kernel
                try:
                    space = _Space(s0, s1, width, list(p.size_bytes), n_sections, cap)
                    o = _Ordering(space, heuristic)
                    status = o.advance(10_000)
                finally:
                    alloc_mod._search_kernel = compiled
                runs.append((status, o.nodes, o.offsets()))
            assert runs[0] == runs[1]


def test_search_is_deterministic_and_iterative():
    """Thousands of buffers (far beyond Python's default recursion limit of placed buffers per
    path) with a greedy-hostile tight capacity; two runs give the same offsets and nodes."""
    rng = random.Random(3)
    n = 3000
    lo = [rng.randint(0, 4000) for _ in range(n)]
    hi = [x + rng.randint(1, 60) for x in lo]
    sz = [rng.choice([1, 2, 3, 5]) for _ in range(n)]
    p = AllocProblem.from_lists(lo, hi, sz)
    cap = peak_live(p)[0]
    first = _exact(p, cap)
    assert first[0] is not None and check_alloc(p, cap, first[0]) == []
    assert _exact(p, cap) == first
    offs = pack_buffers(lo, hi, sz, cap, max_nodes=200_000)
    assert offs is not None and check_alloc(p, cap, offs) == []


def test_zero_sizes_are_rejected_by_the_search():
    with pytest.raises(ValueError, match="sizes must be positive"):
        _exact(AllocProblem.from_lists([0, 0], [1, 1], [0, 1]), 1)


# ---- reading CSVs -------------------------------------------------------------------------

@pytest.mark.parametrize("text, needle", [
    ("id,lower,size\n0,0,4\n", "missing column 'upper'"),
    ("id,lower,upper,size\n0,0,x,4\n", ":2: column 'upper': 'x' is not an integer"),
    ("id,lower,upper,size\n0,0,1,4\n1,3,3,4\n", ":3: column 'upper': 3 <= lower 3"),
    ("id,lower,upper,size\n0,0,1,-4\n", ":2: column 'size': negative size -4"),
    ("id,lower,upper,size\n7,0,1,4\n7,1,2,4\n", ":3: column 'id': duplicate id '7' (first on line 2)"),
    ("id,lower,upper,size\n0,0,1\n", ":2: 3 cells, header has 4"),
    ("", "empty file"),
])
def test_bad_csv_rows_name_file_line_and_column(tmp_path, text, needle):
    path = _csv(tmp_path, text)
    with pytest.raises(BadInputError) as e:
        read_minimalloc_csv(path)
    assert str(path) in str(e.value) and needle in str(e.value)


def test_extra_columns_are_kept(tmp_path, capsys):
    path = _csv(tmp_path, "id,lower,upper,size,name\na,0,2,4,first\nb,1,3,4,second\n")
    assert main([str(path), "--capacity", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "id,lower,upper,size,name,offset"
    assert lines[1].startswith("a,0,2,4,first,") and lines[2].startswith("b,1,3,4,second,")


# ---- CLI ----------------------------------------------------------------------------------

def test_cli_exit_codes(tmp_path, capsys):
    ok = _csv(tmp_path, "id,lower,upper,size\n0,0,2,2\n1,0,1,1\n2,1,3,1\n3,2,4,1\n4,0,3,1\n5,3,4,2\n",
              "ok.4.csv")
    out = tmp_path / "out.csv"
    assert main([str(ok), "-o", str(out)]) == 0            # capacity from the file name
    placed = read_minimalloc_csv(ok)
    rows = out.read_text().splitlines()
    assert rows[0] == "id,lower,upper,size,offset"
    offsets = [int(r.split(",")[-1]) for r in rows[1:]]
    assert check_alloc(placed, 4, offsets) == []

    assert main([str(ok), "--capacity", "3"]) == 3        # peak 4 > 3
    assert "infeasible" in capsys.readouterr().err
    assert main([str(ok), "--capacity", "1MiB", "--json", "-o", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["capacity_bytes"] == 1 << 20 and summary["status"] == "OPTIMAL"
    assert summary["peak_live_bytes"] == 4 and summary["height_bytes"] == 4

    nocap = _csv(tmp_path, "id,lower,upper,size\n0,0,1,1\n", "nocap.csv")
    assert main([str(nocap)]) == 2
    assert "no --capacity" in capsys.readouterr().err
    assert main([str(ok), "-o", str(ok)]) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "Traceback" not in err
    assert main([str(ok), "--capacity", "lots"]) == 2
    assert main([str(tmp_path / "missing.csv"), "--capacity", "4"]) == 2
    assert capacity_from_name("A.1048576.csv") == 1048576 and capacity_from_name("a.csv") is None


def test_time_limit_without_answer_exits_4(capsys):
    # Greedy fails on E and the exact search needs far more than 1 ms: nothing is found.
    assert main([str(CHALLENGING / "E.1048576.csv"), "--time-limit", "0.001"]) == 4
    assert "time limit" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["E.1048576.csv", "F.1048576.csv", "I.1048576.csv",
                                  "J.1048576.csv"])
def test_challenging_benchmarks_end_to_end(tmp_path, name):
    out = tmp_path / "out.csv"
    assert main([str(CHALLENGING / name), "-o", str(out), "--time-limit", "60"]) == 0
    problem = read_minimalloc_csv(CHALLENGING / name)
    rows = out.read_text().splitlines()[1:]
    offsets = [int(r.split(",")[-1]) for r in rows]
    assert check_alloc(problem, 1048576, offsets) == []


# ---------------------------------------------------------------------------------------------
# bounded time and memory (docs/alloc.md, "Limits")

def _pairwise_errors(p: AllocProblem, offsets) -> int:
    """Brute force: the number of time- and address-overlapping pairs."""
    bad = 0
    for i in range(p.n):
        for j in range(i + 1, p.n):
            if (p.size_bytes[i] and p.size_bytes[j] and p.lower[i] < p.upper[j]
                    and p.lower[j] < p.upper[i] and offsets[i] < offsets[j] + p.size_bytes[j]
                    and offsets[j] < offsets[i] + p.size_bytes[i]):
                bad += 1
    return bad


def test_sweep_checker_agrees_with_the_pairwise_definition():
    """``check_alloc`` (a sweep, O(n log n) in memory O(n)) reports an overlap exactly when
    some pair overlaps, on random placements, valid or not."""
    rng = random.Random(21)
    for _ in range(300):
        p = _random_instance(rng, rng.randint(2, 14))
        offsets = [rng.randint(0, 12) for _ in range(p.n)]
        errors = check_alloc(p, 100, offsets)
        assert (errors == []) == (_pairwise_errors(p, offsets) == 0), (p, offsets, errors)


def test_search_without_overlap_lists_takes_the_same_path():
    """Past the memory budget of the pairwise overlap lists the search walks the sections' live
    lists instead: same status, nodes and offsets."""
    rng = random.Random(17)
    for _ in range(10):
        p = _random_instance(rng, rng.randint(8, 14))
        cap = peak_live(p)[0]
        s0, s1, n_sections = _sections(p.lower, p.upper)
        width = [u - lo for lo, u in zip(p.lower, p.upper)]
        runs = []
        base, _ = _Space(s0, s1, width, list(p.size_bytes), n_sections, cap).bytes_needed
        for max_bytes in (None, base):       # room for everything / for all but the pair lists
            space = _Space(s0, s1, width, list(p.size_bytes), n_sections, cap, max_bytes=max_bytes)
            o = _Ordering(space, "TWA")
            runs.append((o.advance(10_000), o.nodes, o.offsets(), space.use_ov))
        assert runs[0][:3] == runs[1][:3] and runs[0][3] and not runs[1][3]


def test_pausing_the_kernel_changes_nothing():
    """The kernel stops every few loop iterations (the driver checks the deadline and Ctrl-C
    there) and resumes exactly: same nodes and offsets as one uninterrupted run."""
    rng = random.Random(29)
    for _ in range(8):
        p = _random_instance(rng, rng.randint(10, 14))
        cap = peak_live(p)[0]
        s0, s1, n_sections = _sections(p.lower, p.upper)
        width = [u - lo for lo, u in zip(p.lower, p.upper)]
        whole = _Ordering(_Space(s0, s1, width, list(p.size_bytes), n_sections, cap), "TWA")
        status = whole.advance(5_000)
        paused = _Ordering(_Space(s0, s1, width, list(p.size_bytes), n_sections, cap), "TWA")
        calls = 0
        while True:
            st = paused.advance(5_000, work_limit=7)
            calls += 1
            if st != alloc_mod._BUDGET or paused.run_nodes >= 5_000:
                break
        assert (st, paused.nodes, paused.offsets()) == (status, whole.nodes, whole.offsets())
        assert calls > 1


def test_memory_budget_stops_the_search_cleanly():
    p = AllocProblem.from_lists([0, 0, 1, 2, 0, 3], [2, 1, 3, 4, 3, 4], [2, 1, 1, 1, 1, 2])
    s0, s1, n_sections = _sections(p.lower, p.upper)
    width = [u - lo for lo, u in zip(p.lower, p.upper)]
    import time
    t0 = time.perf_counter()
    sol, infeasible, nodes, stopped = _branch_and_bound(s0, s1, width, list(p.size_bytes),
                                                        n_sections, 4, t0 + 10, None, t0, max_bytes=1)
    assert (sol, infeasible, nodes, stopped) == (None, False, 0, "memory budget")


def test_greedy_kernel_matches_the_reference():
    """The compiled best fit (live lists, neighbours sorted by offset) places every buffer where
    the quadratic numpy reference does, in every order."""
    import numpy as np

    from memmap import static_alloc

    rng = random.Random(8)
    for n in (600, 1500):
        lo = [rng.randint(0, n) for _ in range(n)]
        hi = [x + (rng.randint(0, 5) if rng.random() < 0.8 else rng.randint(0, n)) for x in lo]
        sz = [64 * rng.choice([1, 1, 2, rng.randint(1, 50)]) for _ in range(n)]
        for order in ("size", "area", "length"):
            got = static_alloc.greedy_allocate(lo, hi, sz, orders=(order,))
            ref = static_alloc._greedy_allocate_numpy(np.array(lo), np.array(hi), np.array(sz), (order,))
            assert got[1] == ref[1] and got[0].tolist() == ref[0].tolist()
