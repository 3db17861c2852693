"""Issue 14 item 12: `simrec train-rl` evaluates with the grounded decisions (mock LLM) unless text is asked for,
and shows its progress with an estimate instead of minutes of silence. Issue 15: it writes SB3's TensorBoard logs."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.cli import app
from experiments.rl.progress import EvalProgress


def test_train_rl_evaluation_prints_progress_and_uses_decisions_only(
    tmp_path: Path, worker_cache: Path, capsys
) -> None:
    app(["train-rl", "--data.dataset", "synthetic", "--data.cache-dir", str(worker_cache),
         "--llm.backend", "llama-cpp", "--run.out-dir", str(tmp_path / "runs"), "--run.name", "rl",
         "--rl.timesteps", "64", "--rl.eval-personas", "3", "--rl.base", "pop"])  # fmt: skip
    captured = capsys.readouterr()
    flat = re.sub(r"\s+", "", captured.out)  # the console wraps long lines wherever the run's paths put the break
    assert "LLMmock(decisionsonly;--rl.eval-text" in flat
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("eval ")]
    # ppo, sim-greedy, pop (its base) and random, each in the training user model and the other one: 8 x 3 sessions
    assert any(re.match(r"eval train_sim ppo: 3/3 users; all policies 3/24 \(.* users/s, .* s, ~\d+ s left\)", ln)
               for ln in lines)  # fmt: skip
    assert lines[-1].startswith("eval other_sim random: 3/3 users; all policies 24/24")
    result = json.loads((tmp_path / "runs" / "rl" / "evaluate_rl.json").read_text())
    assert set(result["policies"]) == {"ppo", "sim-greedy", "pop", "random"}
    (run,) = (tmp_path / "runs" / "rl" / "tensorboard").iterdir()  # SB3's ppo_1
    scalars = EventAccumulator(str(run)).Reload().Tags()["scalars"]
    assert {"rollout/ep_rew_mean", "time/fps"} <= set(scalars)


def test_eval_progress_throttles_and_estimates() -> None:
    out = io.StringIO()
    progress = EvalProgress(n_policies=2, n_users=10, stream=out, every_s=3600.0)
    progress("a", 1)  # first report is printed
    progress("a", 2)  # throttled
    progress("a", 10, final=True)
    progress("b", 5, final=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "all policies 10/20" in lines[1] and "all policies 15/20" in lines[2]
    assert re.search(r"~\d+ s left", lines[2])
