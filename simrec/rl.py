"""RL entry points: the candidate-scoring policy's SB3 `policy_kwargs` and its features extractor.

```python
import gymnasium as gym, simrec, simrec.rl
from stable_baselines3 import PPO
env = gym.make("simrec/FastRecRank-v1")
model = PPO("MultiInputPolicy", env, policy_kwargs=simrec.rl.policy_kwargs()).learn(2_000)
```
"""

from __future__ import annotations

from experiments.rl.policy import CandidateSetExtractor, policy_kwargs

__all__ = ["CandidateSetExtractor", "policy_kwargs"]
