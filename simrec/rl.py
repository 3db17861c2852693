"""RL entry points: the item-wise ranking policy (`CandidateScoringPolicy`), the weights action's SB3
`policy_kwargs` and features extractor, the native vector env as an SB3 `VecEnv` (`make_sb3_vec_env`, same-step
autoreset), and `evaluate`, which scores a trained model on the held-out personas against real held-out data
(what `simrec evaluate-rl` reports).

```python
import gymnasium as gym, simrec, simrec.rl
from stable_baselines3 import PPO
env = simrec.rl.make_sb3_vec_env("simrec/FastRec-v1", 8, personas="train", recommender="mf")  # 8 sessions at once
model = PPO(simrec.rl.CandidateScoringPolicy, env).learn(100_000)       # pages drawn from one item-wise scorer
result = simrec.rl.evaluate(model, "simrec/FastRec-v1", "runs/my-ppo", recommender="mf")  # held-out, real TEST
weights = PPO("MultiInputPolicy", gym.make("simrec/FastRecRank-v1"), policy_kwargs=simrec.rl.policy_kwargs())
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
