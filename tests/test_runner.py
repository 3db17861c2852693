"""The batched runner: batch-size independence, resume after kill -9 with identical logs, bad recommenders."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recommenders.random_policy import RandomRecommender
from simenv.eventlog import read_table
from simenv.metrics import run_metrics
from simenv.records import Recommendation
from simenv.runner import run_sessions
from tests.fixtures_env import NoisyUser, run_small, tiny_world

DS, PERSONAS, SPLIT = tiny_world()
ROOT = Path(__file__).resolve().parents[1]


def _tables(run_dir):
    return {t: read_table(run_dir, t).drop(columns="run") for t in ("events", "pages", "interviews")}


def test_results_do_not_depend_on_batch_composition(tmp_path):
    small = run_small(tmp_path / "small", batch_size=7)
    big = run_small(tmp_path / "big", batch_size=100)
    assert small.n_episodes == big.n_episodes == len(PERSONAS)
    a, b = _tables(tmp_path / "small"), _tables(tmp_path / "big")
    for name in a:
        cols = (
            ["episode", "page", "position"] if name == "events" else ["episode"] + (["page"] if name == "pages" else [])
        )
        x = a[name].sort_values(cols, ignore_index=True)
        y = b[name].sort_values(cols, ignore_index=True)
        assert x.equals(y), name
    events = a["events"]
    assert len(events) == 4 * a["pages"].shape[0]
    assert events["propensity"].between(0, 1).all()  # random policy: propensities logged
    # Items never repeat within an episode and never come from the persona's train history.
    for _, rows in events.groupby("episode"):
        user = int(rows["user"].iloc[0])
        assert rows["item"].is_unique
        assert not set(rows["item"]) & set(PERSONAS[user].train_items)
    metrics = run_metrics(tmp_path / "small", rng=np.random.default_rng(0))
    assert set(metrics["metric"]) == {"P_view", "N_like", "P_like", "N_exit", "S_sat"}


KILLER = """
import os, signal, sys
from tests.fixtures_env import NoisyUser
from tests.fixtures_env import run_small

class KillingUser(NoisyUser):
    calls = 0
    def react_batch(self, sessions, pages):
        KillingUser.calls += 1
        if KillingUser.calls == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().react_batch(sessions, pages)

run_small(sys.argv[1], batch_size=8, user=KillingUser())
"""


def _files(run_dir):
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(Path(run_dir).rglob("*")) if p.is_file()}


def test_resume_after_kill_gives_identical_logs(tmp_path):
    clean, crashed = tmp_path / "clean" / "run", tmp_path / "crashed" / "run"  # same run id
    run_small(clean, batch_size=8)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Calls 1-5: chunk 0; 6-10: chunk 1; killed on the 3rd page batch of chunk 2.
    proc = subprocess.run([sys.executable, "-c", KILLER, str(crashed), "13"], cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == -9
    before = _files(crashed)
    assert "checkpoint.json" in before
    assert len([f for f in before if f.startswith("events/")]) > 10  # parts of the chunk in flight exist
    with pytest.raises(FileExistsError, match="resume=True"):
        run_small(crashed, batch_size=8)
    with pytest.raises(ValueError, match="batch_size"):
        run_small(crashed, batch_size=9, resume=True)
    summary = run_small(crashed, batch_size=8, resume=True)
    assert summary.n_skipped == 16
    assert _files(crashed) == _files(clean)


class _BadRecommender(RandomRecommender):
    def recommend(self, user_id, k, exclude, rng, history=()):
        return Recommendation(tuple(sorted(exclude))[:k])


def test_recommender_returning_excluded_items_is_named(tmp_path):
    rec = _BadRecommender().fit(SPLIT.train, DS.n_users, DS.n_items)
    with pytest.raises(ValueError, match=r"recommender 'bad', user 0, page 0"):
        run_sessions(rec, NoisyUser(), PERSONAS, DS, SPLIT.train, tmp_path, policy_name="bad")


class _Crash(RuntimeError):
    pass


def _llm_run(run_dir, crash_on=None, resume=False):
    """LLM persona users on the mock backend with the call log in the run directory."""
    from agents.embedding import HashingEmbedder
    from agents.llm_user import LLMUserModel
    from simenv.llm import LLMConfig, make_llm

    llm = make_llm(LLMConfig(backend="mock", call_log_dir=str(Path(run_dir) / "llm_calls")))
    user = LLMUserModel(DS, llm, HashingEmbedder(), train=SPLIT.train)
    if crash_on is not None:
        calls = {"n": 0}
        inner = user.react_batch

        def react_batch(sessions, pages):
            calls["n"] += 1
            if calls["n"] == crash_on:
                raise _Crash("simulated crash")
            return inner(sessions, pages)

        user.react_batch = react_batch
    rec = RandomRecommender().fit(SPLIT.train, DS.n_users, DS.n_items)
    users = sorted(PERSONAS)[:9]
    return run_sessions(
        rec,
        user,
        PERSONAS,
        DS,
        SPLIT.train,
        run_dir,
        n_pages=3,
        seed=2,
        policy_name="random",
        resume=resume,
        batch_size=3,
        users=users,
    )


def test_resume_with_llm_user_and_call_log_is_identical(tmp_path):
    from simenv.runner import rollback_to_checkpoint

    clean, crashed = tmp_path / "a" / "run", tmp_path / "b" / "run"
    _llm_run(clean)
    with pytest.raises(_Crash):
        _llm_run(crashed, crash_on=5)  # chunk 0 done (3 page batches), crash inside chunk 1
    assert rollback_to_checkpoint(crashed) == 1
    _llm_run(crashed, resume=True)
    files, resumed = _files(clean), _files(crashed)
    assert files.keys() == resumed.keys()
    assert {k: v for k, v in resumed.items() if not k.startswith("llm_calls/")} == {
        k: v for k, v in files.items() if not k.startswith("llm_calls/")
    }
    # The call log matches row for row except the measured wall-clock latency.
    calls_a = read_table(clean, "llm_calls").drop(columns="latency_s")
    calls_b = read_table(crashed, "llm_calls").drop(columns="latency_s")
    assert len(calls_a) > 0 and calls_a.equals(calls_b)
