"""``--solver rl``: verified plans in both modes, the time budget, CLI options, the shipped
checkpoint."""

import json
import time

import jax
import numpy as np
import pytest

from memmap.cli import main as memmap_main
from memmap.errors import MemmapError
from memmap.ir.synthetic import random_graph
from memmap.pipeline import optimize, run_solver
from memmap.problem import Problem, Target
from memmap.errors import BadInputError
from memmap.rl.agent import SEARCH_MODELS, AgentConfig
from memmap.rl.solver import SEARCH_MODELS as SOLVER_SEARCH_MODELS
from memmap.rl.solver import RLSolverOptions, default_checkpoint, plan_policy
from memmap.rl.train import TrainConfig, save_checkpoint, _agent_and_learner
from memmap.solvers import SOLVERS
from memmap.verify import verify_plan
from tests.helpers import one_line_error

TGT = Target("t", 16384, alignment_bytes=64, offchip_bandwidth_bytes_per_s=1e9,
             onchip_bandwidth_bytes_per_s=1e10, compute_flops_per_s=1e12)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    cfg = TrainConfig(steps=1, agent=AgentConfig(hidden=16, latent=8, num_simulations=2))
    agent, _ = _agent_and_learner(cfg)
    path = tmp_path_factory.mktemp("policy") / "p.npz"
    save_checkpoint(path, cfg, agent.init(jax.random.PRNGKey(0)), None, None, {"step": 0})
    return str(path)


def test_rl_is_registered_and_plans_verify(policy):
    assert "rl" in SOLVERS
    g = random_graph(4, num_ops=12, max_size_bytes=4096)
    for mode in ("tiered", "strict"):
        p = Problem(g, TGT.with_capacity(max(16384, Problem(g, TGT, "strict").m_r_bytes)), mode)
        plan = run_solver(p, "rl", solver_options={"rl": RLSolverOptions(checkpoint=policy)})
        assert plan.solver == "rl" and verify_plan(plan).ok and plan.info["policy"] == "search"
        assert plan.info["searched_moves"] == plan.info["moves"]
        again = run_solver(p, "rl", solver_options={"rl": RLSolverOptions(checkpoint=policy)})
        assert again.residencies == plan.residencies


def test_learned_search_option(policy):
    """``search="learned"`` searches with the checkpoint's dynamics network: a verified plan,
    recorded in plan.info; the true model (default) is recorded too. Different models may give
    different plans, so only the info is compared."""
    g = random_graph(4, num_ops=12, max_size_bytes=4096)
    p = Problem(g, TGT.with_capacity(max(16384, Problem(g, TGT, "strict").m_r_bytes)), "tiered")
    learned = run_solver(p, "rl", solver_options={"rl": RLSolverOptions(checkpoint=policy, search="learned")})
    assert verify_plan(learned).ok and learned.info["policy"] == "search"
    assert learned.info["search"] == "learned" and learned.info["simulations"] == 2
    assert learned.info["searched_moves"] == learned.info["moves"] > 0
    assert learned.info["search_transitions"] == 0     # the game was never stepped inside the search
    true = run_solver(p, "rl", solver_options={"rl": RLSolverOptions(checkpoint=policy)})
    assert verify_plan(true).ok and true.info["search"] == "true" and true.info["search_transitions"] > 0
    # no search, no search model
    prior = run_solver(p, "rl", solver_options={"rl": RLSolverOptions(checkpoint=policy, simulations=0,
                                                                      search="learned")})
    assert prior.info["policy"] == "prior" and prior.info["search"] is None and prior.info["simulations"] == 0


def test_search_option_validated():
    assert SOLVER_SEARCH_MODELS == SEARCH_MODELS
    with pytest.raises(BadInputError, match="--search must be one of true, learned, got 'exact'"):
        RLSolverOptions(search="exact")


def test_time_budget_tiers_and_safety_net(policy):
    assert plan_policy(100, 8, None) == "search"
    assert plan_policy(100, 8, 60.0) == "search"
    assert plan_policy(100, 8, 34.0) == "prior"
    assert plan_policy(100, 8, 5.0) == "greedy"
    g = random_graph(5, num_ops=30, max_size_bytes=4096)
    p = Problem(g, TGT, "tiered")
    t0 = time.monotonic()
    plan = run_solver(p, "rl", time_limit_s=0.0, solver_options={"rl": RLSolverOptions(checkpoint=policy)})
    assert time.monotonic() - t0 < 30
    assert verify_plan(plan).ok and plan.info["searched_moves"] == 0 and plan.info["policy"] == "greedy"
    assert plan.info["finished_without_network"] == plan.info["moves"]
    # a small budget plays the greedy policy without jax, deterministically
    a = run_solver(p, "rl", time_limit_s=5.0, solver_options={"rl": RLSolverOptions(checkpoint=policy)})
    b = run_solver(p, "rl", time_limit_s=5.0, solver_options={"rl": RLSolverOptions(checkpoint=policy)})
    assert a.info["policy"] == "greedy" and a.residencies == b.residencies and verify_plan(a).ok


def test_best_includes_rl(policy):
    g = random_graph(6, num_ops=10, max_size_bytes=4096)
    plan = optimize(g, target=TGT, mode="tiered", solver="best", time_limit_s=60,
                    solver_options={"rl": RLSolverOptions(checkpoint=policy, simulations=2)})
    assert "rl" in {row["solver"] for row in plan.info["comparison"]}


def test_cli_options(policy, tmp_path, capsys):
    args = ["optimize", "examples/small_cnn_train.after.hlo", "--scratchpad", "512KiB", "--mode", "tiered",
            "--solver", "rl", "--checkpoint", policy, "--simulations", "1", "--no-plot", "--json", "-o", str(tmp_path)]
    assert memmap_main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["solver"] == "rl"
    bad = list(args)
    bad[bad.index(policy)] = str(tmp_path / "missing.npz")
    assert memmap_main(bad) == 2
    assert "missing.npz" in capsys.readouterr().err
    neg = list(args)
    neg[neg.index("--simulations") + 1] = "-1"
    assert memmap_main(neg) == 2
    capsys.readouterr()
    learned = args[:-3] + ["--search", "learned", "--json", "-o", str(tmp_path / "learned")]
    assert memmap_main(learned) == 0
    assert json.loads(capsys.readouterr().out)["solver"] == "rl"
    assert json.loads((tmp_path / "learned" / "plan.json").read_text())["info"]["search"] == "learned"
    bad_search = args[:-3] + ["--search", "magic", "--json", "-o", str(tmp_path / "bad")]
    assert memmap_main(bad_search) == 2
    assert "invalid choice: 'magic'" in one_line_error(capsys.readouterr().err)


def test_shipped_checkpoint_plays():
    assert default_checkpoint().is_file()
    g = random_graph(7, num_ops=8, max_size_bytes=4096)
    plan = run_solver(Problem(g, TGT, "tiered"), "rl", solver_options={"rl": RLSolverOptions(simulations=1)})
    assert verify_plan(plan).ok


def test_pairs_strict_at_m_r_with_search(policy):
    """Random graphs with in-place pairs, strict mode at M_R: the agent with search finds a
    verified plan (it failed with 'illegal action -1' before the game knew pairs)."""
    for seed in range(3):
        g = random_graph(seed, num_ops=10, max_size_bytes=4096, inplace_prob=0.6)
        p = Problem(g, TGT.with_capacity(Problem(g, TGT, "strict").m_r_bytes), "strict")
        plan = run_solver(p, "rl", solver_options={"rl": RLSolverOptions(checkpoint=policy)})
        assert verify_plan(plan).ok and plan.info["policy"] == "search"


@pytest.mark.parametrize("time_limit_s", [5.0, None], ids=["greedy", "search"])
def test_no_legal_action_is_a_memmap_error(policy, monkeypatch, time_limit_s):
    """Should the game ever reach a state without a legal action (simulated: no free chunk from
    the 4th candidate search on), the solver raises the game's MemmapError, also when the state
    is first met inside a search transition (a jax callback)."""
    from memmap.rl import game

    calls = {"n": 0}
    chunks = game._chunks

    def failing(*args):
        calls["n"] += 1
        return chunks(*args) if calls["n"] <= 3 else (np.zeros(0, np.int64), np.zeros(0, np.int64))

    monkeypatch.setattr(game, "_chunks", failing)
    g = random_graph(4, num_ops=12, max_size_bytes=4096)
    p = Problem(g, TGT.with_capacity(max(16384, Problem(g, TGT, "strict").m_r_bytes)), "strict")
    with pytest.raises(MemmapError, match="mallocGame: no legal action") as e:
        run_solver(p, "rl", time_limit_s=time_limit_s, solver_options={"rl": RLSolverOptions(checkpoint=policy)})
    assert type(e.value) is MemmapError
