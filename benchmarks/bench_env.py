"""Environment benchmarks: fast-user env steps/s, the batched runner with the mock LLM user, and LLM
throughput through a latency-injecting loopback endpoint.

    .venv/bin/python -m benchmarks.bench_env [--quick]

1. `simrec/FastRec-v1` (ml-100k, fast MNL user): raw reset/step loop with random valid pages (one
   permutation of the candidates per episode), no SB3; also the sequential id (one slot per step). Then the
   vector entry point (`simenv.vector_env.FastRecVectorEnv`, N sessions stepped together in numpy) for N = 64,
   256: user-steps/s (pages shown or reset across all N sessions), random valid pages, autoresets included.
   Then SB3 PPO `learn` (4,096 steps, 16 envs, caches warm) on the native env through `experiments.rl.sb3_vec` vs
   `DummyVecEnv` of 16 `gym.make` envs: env steps/s with policy, rollouts and updates included, and the ratio.
2. `run_sessions`: 1,000 users x 5 pages with the LLM persona user on the mock backend (ml-100k has 703
   eligible personas; episodes cycle through them), Pop recommender, full event log; target <= 10 s.
3. The same runner against a loopback OpenAI-compatible server that answers every request after a fixed
   latency; throughput should approach concurrency / latency. The server runs in its own process (as a real
   endpoint would), so "client CPU" is this process's alone and the server does not compete for its GIL.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from typing import Any

import gymnasium as gym
import numpy as np

import simrec  # noqa: F401  (registers the env ids)
from simenv.runner import run_sessions
from simrec.envs import default_world as build_world


def warm_per_persona_caches(inner: Any) -> None:
    """Fill a single env's per-persona caches (the user model's plans, candidate bases, the featurizer's per-user
    columns) so that a timed loop measures the steady state."""
    inner.user_model.prepare(list(inner.personas.values()))
    for persona in inner.personas.values():
        inner.reset(options={"user_id": persona.user_id})


def env_steps_per_second(
    env_id: str, n_steps: int, seed: int = 0, unwrapped: bool = False
) -> tuple[float, float, float]:
    """(steps/s wall, steps per CPU-second, mean steps per episode) for a raw loop with random valid actions.

    `unwrapped=True` steps the env without gym.make's wrappers (TimeLimit, OrderEnforcing, PassiveEnvChecker),
    to show what they cost; the env ends its episodes at the same page limit itself.
    """
    env = gym.make(env_id)
    if unwrapped:
        env = env.unwrapped
    inner = env.unwrapped
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    warm_per_persona_caches(inner)
    steps = episodes = 0
    start, cpu = time.perf_counter(), time.process_time()
    while steps < n_steps:
        env.reset()
        order = rng.permutation(inner.n_candidates)
        done, t = False, 0
        while not done:
            if inner.action_mode == "slate":
                action = order[t * inner.page_size : (t + 1) * inner.page_size]
            else:
                action = order[t]
            _, _, terminated, truncated, _ = env.step(action)
            t += 1
            done = terminated or truncated
        steps += t
        episodes += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return steps / elapsed, steps / cpu, steps / episodes


def vector_user_steps_per_second(num_envs: int, n_steps: int, seed: int = 0) -> tuple[float, float, float]:
    """(user-steps/s wall, per CPU-second, share of steps that were autoresets) of `gym.make_vec`'s vector entry point.

    A user-step is one sub-env step (a page shown, or a next-step autoreset); random valid pages: per session, a
    uniform sample of available candidates (argsort of masked uniforms), drawn in numpy for the whole batch.
    """
    envs = gym.make_vec("simrec/FastRec-v1", num_envs=num_envs, vectorization_mode="vector_entry_point")
    rng = np.random.default_rng(seed)
    k = envs.page_size
    _, info = envs.reset(seed=seed)
    every = np.arange(len(envs.unwrapped.users))
    envs.unwrapped.prepare(every)  # warm the per-persona caches (candidate pools, user arrays), as above
    for _ in range(2 * envs.max_pages):
        _, info = envs.reset()
    steps = resets = 0
    start, cpu = time.perf_counter(), time.process_time()
    while steps < n_steps:
        keys = np.where(info["action_mask"], rng.random(info["action_mask"].shape), 2.0)
        _, _, _, _, info = envs.step(np.argsort(keys, axis=1)[:, :k])
        steps += num_envs
        resets += int(info["_candidate_ids"].sum())
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    envs.close()
    return steps / elapsed, steps / cpu, resets / steps


def ppo_learn_steps_per_second(vec: str, n_envs: int, budget: int, seed: int = 0) -> float:
    """Env steps/s of SB3 PPO `learn(budget)` on FastRec-v1 (policy, rollouts and updates included), `vec` =
    "native" (`experiments.rl.sb3_vec` over the vector entry point) or "dummy" (`DummyVecEnv` of `n_envs`
    `gym.make` envs with `Monitor`, as SB3's `make_vec_env`). Steady state: per-persona caches filled first (each
    single env's plans and candidate bases; the featurizer is shared by the process), then one untimed rollout."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from experiments.rl.sb3_vec import make_sb3_vec_env

    torch.set_num_threads(1)
    if vec == "native":
        env = make_sb3_vec_env("simrec/FastRec-v1", n_envs, seed=seed)
        venv = env.unwrapped.venv
        every = np.arange(len(venv.users))
        venv.prepare(every)
    else:
        env = DummyVecEnv([lambda: Monitor(gym.make("simrec/FastRec-v1")) for _ in range(n_envs)])
        env.seed(seed)
        for e in env.envs:
            warm_per_persona_caches(e.unwrapped)
    n_steps = 64
    model = PPO("MultiInputPolicy", env, n_steps=n_steps, batch_size=256, n_epochs=2, seed=seed, device="cpu")
    model.learn(n_steps * n_envs)
    start = time.perf_counter()
    model.learn(budget, reset_num_timesteps=False)
    elapsed = time.perf_counter() - start
    env.close()
    return budget / elapsed


def loopback_responder(body: dict[str, Any]) -> str:
    """A valid answer for each agents template, from the prompt text: every prompt that ends with its answer's JSON
    example (`JSON: {...}`) gets that example back (the page_reaction skeleton and the interview's reason filled
    in); reflections get an insight."""
    text = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
    if "JSON: " not in text:
        return json.dumps({"insights": ["I like a mix of genres."]})
    example = json.loads(text[text.rindex("JSON: ") + len("JSON: ") :].strip())
    if "feelings" in example:  # page_reaction (narrate mode): a skeleton to fill
        return json.dumps({key: ["fine"] * len(v) if isinstance(v, list) else "ok" for key, v in example.items()})
    if example.get("reason"):  # the interview's reason: a forced opening, then words of the user's own
        example["reason"] += " the picks were fine"
    return json.dumps(example)


def _serve_loopback(plan: Any, conn: Any) -> None:
    """Child process: serve `loopback_responder` until told to stop, then send back the server's stats."""
    from tests.servers.fault_server import FaultServer

    with FaultServer(plan, responder=loopback_responder) as server:
        conn.send(server.base_url)
        conn.recv()
        conn.send(dict(server.stats))


def runner_seconds(user_model: Any, n_users: int, n_pages: int, world: Any, seed: int = 0) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, pages shown) of one `run_sessions` call over `world` (experiments.world.World)."""
    from recommenders.registry import make

    ds, split, personas = world.dataset, world.split, world.personas
    ids = sorted(personas)
    users = [ids[e % len(ids)] for e in range(n_users)]
    rec = make("pop").fit(split.train, ds.n_users, ds.n_items)
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        summary = run_sessions(
            rec,
            user_model,
            personas,
            ds,
            split.train,
            tmp,
            n_pages=n_pages,
            page_size=4,
            seed=seed,
            policy_name="pop",
            users=users,
        )
        return time.perf_counter() - start, time.process_time() - cpu, summary.n_pages_shown


def main() -> None:
    parser = argparse.ArgumentParser()
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    args = parser.parse_args()
    n_steps = 5_000 if args.quick else 50_000

    for env_id in ("simrec/FastRec-v1", "simrec/FastRecSeq-v1"):
        rate, cpu_rate, per_episode = env_steps_per_second(env_id, n_steps)
        print(
            f"{env_id}: {rate:,.0f} steps/s wall, {cpu_rate:,.0f} per CPU-second ({per_episode:.2f} steps/episode, "
            "raw loop, random valid actions; target >= 20,000)"
        )
    rate, cpu_rate, _ = env_steps_per_second("simrec/FastRec-v1", n_steps, unwrapped=True)
    print(f"simrec/FastRec-v1 without gym.make's wrappers: {rate:,.0f} steps/s wall, {cpu_rate:,.0f} per CPU-second")
    for num_envs in (64, 256):
        rate, cpu_rate, reset_share = vector_user_steps_per_second(num_envs, 4 * n_steps)
        print(
            f"FastRec-v1 vector entry point ({num_envs} envs): {rate:,.0f} user-steps/s wall, {cpu_rate:,.0f} per "
            f"CPU-second ({reset_share:.0%} of them autoresets, so {rate * (1 - reset_share):,.0f} pages/s wall; "
            "random valid pages; target >= 20,000)"
        )
    native, dummy = (ppo_learn_steps_per_second(v, 16, 4_096) for v in ("native", "dummy"))
    print(
        f"PPO learn, 4,096 steps, 16 envs: native adapter {native:,.0f} env steps/s, "
        f"DummyVecEnv {dummy:,.0f} ({native / dummy:.2f}x)"
    )

    from agents.embedding import HashingEmbedder
    from agents.llm_user import LLMUserModel
    from simenv.llm import LLMConfig, make_llm

    world = build_world("ml-100k")
    ds, split = world.dataset, world.split
    n_users = 200 if args.quick else 1000
    mock_user = LLMUserModel(ds, make_llm(LLMConfig(backend="mock")), HashingEmbedder(), train=split.train)
    seconds, cpu, pages = runner_seconds(mock_user, n_users, 5, world)
    print(
        f"runner, LLM user + mock: {n_users} users x 5 pages in {seconds:.2f} s wall, {cpu:.2f} s CPU "
        f"({pages} pages shown; target <= 10 s)"
    )

    from tests.servers.fault_server import FaultPlan

    latency, concurrency = 0.2, 32
    n_loop = 64 if args.quick else 256
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve_loopback, args=(FaultPlan(latency_s=latency), child), daemon=True)
    server.start()
    try:
        base_url = parent.recv()
        os.environ.setdefault("OPENAI_API_KEY", "loopback-placeholder")
        cfg = LLMConfig(backend="openai", model="loopback", base_url=base_url, concurrency=concurrency, max_repairs=0)
        live_user = LLMUserModel(ds, make_llm(cfg), HashingEmbedder(), train=split.train)
        seconds, cpu, pages = runner_seconds(live_user, n_loop, 2, world)
        parent.send("stop")
        calls = sum(parent.recv().values())
    finally:
        server.join(10)
        if server.is_alive():
            server.terminate()
    print(
        f"runner, loopback LLM (latency {latency} s, concurrency {concurrency}): {calls} calls in {seconds:.2f} s "
        f"= {calls / seconds:.1f} calls/s (ideal {concurrency / latency:.0f}); {pages} pages; client CPU {cpu:.2f} s"
    )


if __name__ == "__main__":
    main()
