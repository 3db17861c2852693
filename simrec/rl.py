"""RL entry points: the candidate-scoring policy's SB3 `policy_kwargs` and its features extractor, the native
vector env as an SB3 `VecEnv` (`make_sb3_vec_env`, same-step autoreset), and `evaluate`, which scores a trained
model on the held-out personas against real held-out data (what `simrec evaluate-rl` reports).

```python
import gymnasium as gym, simrec, simrec.rl
from stable_baselines3 import PPO
env = gym.make("simrec/FastRecRank-v1")
model = PPO("MultiInputPolicy", env, policy_kwargs=simrec.rl.policy_kwargs()).learn(2_000)
vec = simrec.rl.make_sb3_vec_env("simrec/FastRecRank-v1", n_envs=8, seed=0)  # 8 sessions in one numpy batch
model = PPO("MultiInputPolicy", simrec.rl.make_sb3_vec_env("simrec/FastRecRank-v1", 8, personas="train"),
            policy_kwargs=simrec.rl.policy_kwargs()).learn(20_000)
result = simrec.rl.evaluate(model, "simrec/FastRecRank-v1", "runs/my-ppo")  # held-out personas, real TEST data
```
"""

from __future__ import annotations

from experiments.rl.policy import CandidateScoringPolicy, CandidateSetExtractor, policy_kwargs
from experiments.rl.sb3_vec import SB3VectorEnv, make_sb3_vec_env
from simrec.rl_evaluate import evaluate

__all__ = [
    "CandidateScoringPolicy",
    "CandidateSetExtractor",
    "SB3VectorEnv",
    "evaluate",
    "make_sb3_vec_env",
    "policy_kwargs",
]
