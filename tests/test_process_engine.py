"""The processes engine (`--engine processes`): spawned worker processes of this machine run a policy's shards and
the driver merges them. It writes the same events, pages, interviews and metrics as `--engine local` with 1 and 2
workers, pipelined LLM users included (their sessions in flight and LLM concurrency shared out over the workers); a
shard that fails, or a worker process that dies, fails the command, and `simrec resume` finishes it identically;
each shard's LLM latency is counted for the busy share."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import pytest

from experiments.build import build_llm, build_world, worker_setup
from experiments.cli import app
from experiments.compare import policy_parts, runner_batch
from experiments.config import load_config
from experiments.engine import LocalEngine, PolicyRecipe, ProcessEngine
from experiments.engine.processes import share, stop_workers
from experiments.engine.shards import call_latency_s
from simenv.llm import CallLogLLM
from tests.fixtures_cache import seed_response_cache
from tests.fixtures_engine import (
    BOTH,
    KILL,
    assert_failed_run_resumes,
    assert_same_policy,
    flags,
    write_fault_models,
)
from tests.servers.fault_server import FaultServer

SECRET = "sk-test-process-engine-0123456789"


@pytest.fixture(scope="module", name="root")
def root_fixture(tmp_path_factory, fitted_response: Path):
    """A cache holding the fitted response model, the fault models' settings; the worker processes (started by the
    first test that needs them, kept for the module as a command keeps them for its policies) end with it."""
    root = tmp_path_factory.mktemp("process_engine")
    seed_response_cache(root / "cache", fitted_response)
    write_fault_models(root)
    yield root
    stop_workers()


def test_processes_match_local_with_one_and_two_workers(root: Path) -> None:
    ranking = root / "ranking.csv"  # even users only: the others get the fallback, which external.json counts
    rows = [(u, (u * 7 + j) % 300, 30 - j) for u in range(0, 200, 2) for j in range(30)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "score"]).to_csv(ranking, index=False)
    policies = f'["random","pop","rank=file:{ranking}?ids=dense&fallback=random"]'
    app(["compare", *flags(root, "local", policies)])
    for workers in ("2", "1"):
        name = f"processes{workers}"
        extra = ("--engine", "processes", "--processes.workers", workers, "--processes.shards-per-worker", "2")
        app(["compare", *flags(root, name, policies, *extra)])
        for policy in ("random", "pop", "rank"):
            assert_same_policy(root / "runs/local/policies" / policy, root / "runs" / name / "policies" / policy)
        external = [
            json.loads((root / "runs" / r / "policies/rank/external.json").read_text()) for r in ("local", name)
        ]
        assert external[0] == external[1] and external[0]["fallback_users"] > 0
        local_metrics = pd.read_csv(root / "runs/local/report/metrics.csv")
        pd.testing.assert_frame_equal(local_metrics, pd.read_csv(root / "runs" / name / "report/metrics.csv"))
    # 40 personas = 3 chunks of 16: two workers ran 3 shards between them, one worker 2 shards (chunks 0 and 1-2)
    two, one = (
        json.loads((root / "runs" / r / "policies/pop/engine.json").read_text()) for r in ("processes2", "processes1")
    )
    assert two["engine"] == "processes" and len(two["shards"]) == 3 and {s["worker"] for s in two["shards"]} == {0, 1}
    assert len(one["shards"]) == 2 and {s["worker"] for s in one["shards"]} == {0}
    assert len({s["attempt_pid"] for s in two["shards"]}) == 2  # two processes, neither of them this one


def test_a_failing_shard_fails_the_command_and_resume_finishes_it(root: Path) -> None:
    app(["compare", *flags(root, "faults-local", BOTH)])  # faults fire only inside worker processes
    assert_failed_run_resumes(root, "--engine", "processes", "--processes.shards-per-worker", "1")


def test_a_dead_worker_process_fails_the_command_and_resume_finishes_it(root: Path) -> None:
    extra = ("--engine", "processes", "--processes.shards-per-worker", "1")
    with pytest.raises(SystemExit) as failed:
        app(["compare", *flags(root, "kill", KILL, *extra)])
    assert failed.value.code == 1
    assert (root / "kill.marker").exists()  # a worker process died mid-shard (after its first chunk's checkpoint)
    app(["resume", str(root / "runs/kill")])  # on fresh worker processes
    assert_same_policy(root / "runs/faults-local/policies/kill", root / "runs/kill/policies/kill")


def test_pipelined_llm_users_are_shared_out_and_their_latency_counted(root: Path, monkeypatch) -> None:
    """LLM users (mock answers) pipelined with 5 sessions in flight: 2 workers run 3 + 2, the files are the local
    engine's, and the shards' LLM latency adds up to the merged call log's."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # the workers' environment, never their task arguments
    overrides = {
        "data": {"dataset": "synthetic", "n_personas": 40, "cache_dir": str(root / "cache")},
        "llm": {"backend": "mock", "cache": False},
        "users": {"kind": "llm-only", "embedder": "hashing"},
        "engine": "processes",
    }
    config = load_config(None, overrides)
    assert runner_batch(config) == runner_batch(config.model_copy(update={"engine": "local"}))
    world = build_world(config.model_copy(update={"engine": "local"}))
    users = worker_setup(config)
    recipe = PolicyRecipe(config, "pop", worker_setup, policy_parts, build_llm)
    assert SECRET.encode() not in pickle.dumps(recipe)
    run = {"n_pages": 3, "seed": 0, "policy_name": "pop", "batch_size": 16, "concurrency": 5}
    local_dir = root / "pipelined" / "local" / "pop"
    recommender, user_model = policy_parts(users, CallLogLLM(build_llm(config), local_dir / "llm_calls"), "pop")
    LocalEngine().run_policy(world, recommender, user_model, local_dir, None, run)
    engine = ProcessEngine(config)
    policy_dir = root / "pipelined" / "processes" / "pop"
    engine.run_policy(world, recommender, user_model, policy_dir, recipe, run)
    assert_same_policy(local_dir, policy_dir)
    latency = call_latency_s(policy_dir / "llm_calls")
    assert latency > 0 and engine.last.llm_latency_s == pytest.approx(latency)
    assert [share(5, 2, i) for i in range(2)] == [3, 2] and [share(1, 2, i) for i in range(2)] == [1, 1]


def test_engine_auto_shards_32_llm_requests_in_flight_and_records_the_choice(root: Path, monkeypatch) -> None:
    """`--engine auto` (the default) with LLM users keeping 32 requests in flight on an endpoint: the processes
    engine runs the sessions (one process cannot feed that many), and the run records the engine it chose, so a
    resume runs on the same one."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    endpoint = ("--users.kind", "llm-only", "--llm.backend", "openai", "--llm.model", "m", "--llm.concurrency", "32",
                "--llm.max-fallback-share", "1")  # fmt: skip
    with FaultServer(responder=lambda body: "These all look fine.") as server:
        app(["compare", *flags(root, "auto", '["pop"]'), *endpoint, "--llm.base-url", server.base_url])
    run_dir = root / "runs" / "auto"
    assert json.loads((run_dir / "experiment.json").read_text())["engine"] == "processes"
    simulation = json.loads((run_dir / "simulation.json").read_text())
    assert simulation["pop"]["engine"] == "processes" and simulation["pop"]["slots"] == 32
    assert server.stats["ok"] > 0 and SECRET not in (run_dir / "experiment.json").read_text()
