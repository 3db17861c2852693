"""The Ray engine on a real local 2-CPU cluster (one per module): `--engine ray` writes the same events, pages,
interviews and metrics as `--engine local` with 2 workers; a worker killed mid-shard is retried and the
output is still identical; `simrec resume` finishes a Ray run that failed mid-policy; the per-endpoint LLM limit
holds across workers; the cluster listens on 127.0.0.1 only and API keys reach workers through the environment."""

from __future__ import annotations

import ipaddress
import json
import os
import pickle
from pathlib import Path

import pandas as pd
import psutil
import pytest
import ray

from experiments.build import build_llm, worker_setup
from experiments.cli import app
from experiments.compare import policy_parts
from experiments.config import RaySection, load_config
from experiments.engine import PolicyRecipe, RayEngine
from experiments.engine.limits import ClusterLimitedLLM, EndpointSlots
from experiments.engine.ray_engine import connect, stop_workers
from experiments.engine.shards import merge_shards, plan_shards, receive_files, shard_files
from recommenders.random_policy import RandomRecommender
from simenv.llm import LLMRequest, Message
from simenv.runner import run_sessions
from tests.fixtures_cache import seed_response_cache
from tests.fixtures_engine import (
    BOTH,
    KILL,
    assert_failed_run_resumes,
    assert_same_policy,
    flags,
    write_fault_models,
)
from tests.fixtures_env import NoisyUser, tiny_world
from tests.ray_helpers import SleepLLM, max_overlap

SECRET = "sk-test-ray-engine-0123456789"
EXTERNAL = "policies/rank/external.json"


@pytest.fixture(scope="module", name="cluster")
def cluster_fixture():
    """One local cluster for the module, started the way the engine starts it (API key set beforehand)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("OPENAI_API_KEY", SECRET)
    if ray.is_initialized():
        ray.shutdown()
    connect(RaySection(num_workers=2))
    yield ray
    stop_workers()
    ray.shutdown()
    patch.undo()


@pytest.fixture(scope="module", name="root")
def root_fixture(tmp_path_factory, fitted_response: Path) -> Path:
    root = tmp_path_factory.mktemp("ray_engine")
    seed_response_cache(root / "cache", fitted_response)  # the runs load the fitted response model
    write_fault_models(root)
    return root


def test_ray_matches_local_with_two_workers(cluster, root: Path) -> None:
    """The shared shard driver's one-worker case is covered by tests/test_process_engine.py; here the Ray side."""
    # a ranking file for the even users only: the others get the fallback, which external.json counts
    ranking = root / "ranking.csv"
    rows = [(u, (u * 7 + j) % 300, 30 - j) for u in range(0, 200, 2) for j in range(30)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "score"]).to_csv(ranking, index=False)
    policies = f'["random","pop","rank=file:{ranking}?ids=dense&fallback=random"]'
    app(["compare", *flags(root, "local", policies)])
    extra = ("--engine", "ray", "--ray.num-workers", "2", "--ray.shards-per-worker", "2")
    app(["compare", *flags(root, "ray2", policies, *extra)])
    for policy in ("random", "pop", "rank"):
        assert_same_policy(root / "runs/local/policies" / policy, root / "runs/ray2/policies" / policy)
    external = [json.loads((root / "runs" / r / EXTERNAL).read_text()) for r in ("local", "ray2")]
    assert external[0] == external[1] and external[0]["fallback_users"] > 0
    local_metrics = pd.read_csv(root / "runs/local/report/metrics.csv")
    pd.testing.assert_frame_equal(local_metrics, pd.read_csv(root / "runs/ray2/report/metrics.csv"))
    # two workers ran 3 shards (one chunk each) between them
    two = json.loads((root / "runs/ray2/policies/pop/engine.json").read_text())
    assert len({s["worker"] for s in two["shards"]}) == 2 and len(two["shards"]) == 3


def test_killed_worker_is_retried_and_output_identical(cluster, root: Path) -> None:
    app(["compare", *flags(root, "faults-local", BOTH)])  # faults fire only inside Ray workers
    assert not (root / "kill.marker").exists()
    extra = ("--engine", "ray", "--ray.shards-per-worker", "1")
    app(["compare", *flags(root, "kill", KILL, *extra)])
    assert (root / "kill.marker").exists()  # a worker died mid-shard (after its first chunk's checkpoint) ...
    local = root / "runs/faults-local/policies/kill"
    assert_same_policy(local, root / "runs/kill/policies/kill")  # ... and the retried shard resumed it exactly


def test_resume_finishes_a_failed_ray_run(cluster, root: Path) -> None:
    assert_failed_run_resumes(root, "--engine", "ray", "--ray.shards-per-worker", "1")


def test_endpoint_limit_holds_across_workers(cluster, root: Path) -> None:
    """Two processes send 4 concurrent 0.3 s requests each through one endpoint's slots."""

    @ray.remote(num_cpus=0)
    def client(slots, holder: str, log: str) -> None:
        request = LLMRequest(messages=(Message("user", "hi"),), template="t", template_version="1")
        ClusterLimitedLLM(SleepLLM(0.3, log), slots, holder, concurrency=4).complete_batch([request] * 4)

    def peak(limit: int) -> tuple[int, dict]:
        log = root / f"calls-{limit}.txt"
        slots = ray.remote(num_cpus=0, max_concurrency=100)(EndpointSlots).remote(limit)
        ray.get([client.remote(slots, f"w{i}", str(log)) for i in range(2)])
        intervals = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
        assert len(intervals) == 8
        return max_overlap(intervals), ray.get(slots.stats.remote())

    overlap, stats = peak(2)
    assert overlap <= 2 and stats["peak"] == 2 and stats["in_flight"] == 0 and stats["granted"] == 8
    overlap, _ = peak(8)
    assert overlap > 2  # without the limit the two processes do overlap: the check above can fail


def test_local_cluster_is_loopback_only_and_keys_come_from_the_environment(cluster, root: Path) -> None:
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    ray_pids = {p.pid for p in psutil.process_iter(["name", "cmdline"]) if "ray" in " ".join(p.info["cmdline"] or [])}
    listening = [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.pid in ray_pids]
    addresses = {ipaddress.ip_address(c.laddr.ip) for c in listening}
    assert listening and all((getattr(a, "ipv4_mapped", None) or a).is_loopback for a in addresses), addresses

    @ray.remote(num_cpus=0)
    def key_in_worker() -> str | None:
        return os.environ.get("OPENAI_API_KEY")

    assert ray.get(key_in_worker.remote()) == SECRET  # through the job's runtime_env env_vars
    config = load_config(None, {"engine": "ray", "llm": {"backend": "mock"}})
    recipe = PolicyRecipe(config, "pop", worker_setup, policy_parts, build_llm)
    assert SECRET.encode() not in pickle.dumps(recipe)  # what goes to the object store and task arguments
    assert SECRET not in repr(recipe)


def test_fidelity_and_population_on_ray_match_local(cluster, root: Path, capsys) -> None:
    """The fidelity harness shards by user kind and the population by loop variant: same tables as local."""
    base = flags(root, "x", '["pop"]')[:-4]  # without --run.name / --recommenders.names
    fidelity = ["--fidelity.n-personas", "12", "--fidelity.kinds", '["handset","llm-only"]', "--fidelity.ratios", "[1]"]
    population = ["--population.rounds", "2", "--population.recommender", "pop"]
    for command, extra, output in (("fidelity", fidelity, "fidelity.csv"), ("population", population, "population")):
        app([command, *base, *extra, "--run.name", f"{command}-local"])
        capsys.readouterr()
        app([command, *base, *extra, "--run.name", f"{command}-ray", "--engine", "ray"])
        assert "(ray)" in capsys.readouterr().out  # the work went to the workers
        local, other = root / "runs" / f"{command}-local" / output, root / "runs" / f"{command}-ray" / output
        if command == "fidelity":
            pd.testing.assert_frame_equal(pd.read_csv(local), pd.read_csv(other))
        else:
            pd.testing.assert_frame_equal(pd.read_parquet(local), pd.read_parquet(other))
            assert set(pd.read_parquet(other)["variant"]) == {"closed loop", "open loop"}


def test_shards_streamed_from_elsewhere_merge_into_the_local_run(tmp_path: Path) -> None:
    """No Ray: shards run with `only_chunks` in directories the driver never sees (another machine's disk), their
    files streamed into the driver's shard directories and merged, give the local run's files; the plan covers
    every chunk once, in order."""
    ds, personas, split = tiny_world()
    rec = RandomRecommender().fit(split.train, ds.n_users, ds.n_items)

    def run(run_dir: Path, **extra) -> None:
        run_sessions(rec, NoisyUser(), personas, ds, split.train, run_dir, n_pages=3, seed=5, batch_size=3, **extra)

    run(tmp_path / "local" / "pol")
    policy_dir = tmp_path / "sharded" / "pol"
    shards = plan_shards(policy_dir, len(personas), 3, 4)
    assert [c for s in shards for c in s.chunks] == list(range(-(-len(personas) // 3)))
    for shard in shards:
        remote = tmp_path / "remote" / str(shard.index) / "pol"
        run(remote, only_chunks=shard.chunks)
        assert receive_files(shard.directory, shard_files(remote)) > 0
    merge_shards(policy_dir, shards, len(personas))
    assert_same_policy(tmp_path / "local" / "pol", policy_dir)
    assert (policy_dir / "checkpoint.json").read_text() == (tmp_path / "local/pol/checkpoint.json").read_text()


def test_endpoints_are_shared_out_and_limited_per_endpoint() -> None:
    """Worker i calls endpoint i mod n; the cluster-wide limit defaults to [llm] concurrency for endpoints only."""
    urls = ("http://a:8000/v1", "http://b:8000/v1")
    config = load_config(None, {"engine": "ray", "ray": {"num_workers": 3, "llm_endpoints": urls}})
    assert RayEngine(config).endpoints() == [urls[0], urls[1], urls[0]]
    assert RayEngine(config).endpoint_limit() is None  # the mock backend has no endpoint to protect
    openai = load_config(None, {"engine": "ray", "llm": {"backend": "openai", "concurrency": 12}})
    assert RayEngine(openai).endpoints() == [None, None] and RayEngine(openai).endpoint_limit() == 12
    explicit = load_config(None, {"engine": "ray", "ray": {"endpoint_concurrency": 5}})
    assert RayEngine(explicit).endpoint_limit() == 5
    # several [llm] base URLs: each worker gets one of them, so the per-URL limit is exact
    several = load_config(None, {"engine": "ray", "llm": {"backend": "openai", "base_url": ",".join(urls)}})
    assert RayEngine(several).endpoints() == [urls[0], urls[1]]
