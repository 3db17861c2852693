"""What `simrec train-rl` saves and `simrec evaluate-rl` reads: the SB3 model, its metadata and the persona split.

A checkpoint is a directory holding `model.zip` (SB3's own format; `model.d3`, d3rlpy's, for the offline
algorithms of `experiments.rl.offline`), `rl.json` (this module's `Checkpoint`: the experiment config it was
trained under, the algorithm, base recommender, user model, page settings and the persona split), and the
training logs: `monitor.csv` (SB3's episode log) and `tensorboard/` (SB3), or `minari/` (the behaviour
sessions) and `d3rlpy/` (CSV and TensorBoard) for an offline algorithm.

Persona split (`split_personas`): the split's users in a permutation drawn from `default_rng([seed, 15])`; block
`eval_fold` of `eval_personas` consecutive ones (the first block by default) is held out and only ever evaluated,
the rest are trained on. The held-out set depends on the seed, size and fold only, so every checkpoint of one seed,
size and fold is scored on the same personas, and folds 0..K-1 of size ceil(N / K) hold out every persona once
(cross-fitting: `experiments.evaluate_rl_folds` pools their evaluations).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from experiments.build import World
from experiments.config import ExperimentConfig

META_FILE = "rl.json"
MODEL_FILE = "model.zip"
MONITOR_FILE = "monitor.csv"
TENSORBOARD_DIR = "tensorboard"
# algorithm -> (SB3 class name, or "d3rlpy" for the offline ones, the env action mode it is trained in)
ALGOS: dict[str, tuple[str, str]] = {
    "ppo": ("PPO", "slate"),
    "a2c": ("A2C", "slate"),
    "dqn": ("DQN", "sequential"),
    "bc": ("d3rlpy", "sequential"),  # offline, from logged sessions (experiments.rl.offline)
    "cql": ("d3rlpy", "sequential"),
    "bcq": ("d3rlpy", "sequential"),
}
SPLIT_STREAM = 15  # the persona split's generator is default_rng([seed, SPLIT_STREAM])


def split_personas(user_ids: Iterable[int], n_eval: int, seed: int, fold: int = 0) -> tuple[list[int], list[int]]:
    """(train, eval) persona ids, disjoint: block `fold` of `n_eval` consecutive personas of a seeded permutation is
    held out (the last block may be shorter)."""
    ids = np.array(sorted(int(u) for u in user_ids), dtype=np.int64)
    if not 1 <= n_eval < len(ids):
        raise ValueError(f"eval_personas={n_eval}: must be in 1..{len(ids) - 1} (the split has {len(ids)} users)")
    n_folds = -(-len(ids) // n_eval)
    if not 0 <= fold < n_folds:
        raise ValueError(f"eval_fold={fold}: must be in 0..{n_folds - 1} ({len(ids)} users in blocks of {n_eval})")
    order = np.random.default_rng([seed, SPLIT_STREAM]).permutation(ids)
    held_out = order[fold * n_eval : (fold + 1) * n_eval]
    train = np.concatenate([order[: fold * n_eval], order[(fold + 1) * n_eval :]])
    return sorted(train.tolist()), sorted(held_out.tolist())


def decisions_only(config: ExperimentConfig) -> ExperimentConfig:
    """The mock LLM and the hashing embedder unless `[rl] eval_text`: every figure of train-rl and evaluate-rl
    comes from the users' decisions, which depend neither on the LLM's words nor on the embedder."""
    if config.rl.eval_text:
        return config
    llm = config.llm.model_copy(update={"backend": "mock"})
    return config.model_copy(update={"llm": llm, "users": config.users.model_copy(update={"embedder": "hashing"})})


def with_personas(world: World, users: Iterable[int]) -> World:
    """`world` (dataset, split, every split user's persona) with `personas` = exactly `users`."""
    return replace(world, personas={int(u): world.population[int(u)] for u in users})


@dataclass(frozen=True)
class Checkpoint:
    """A trained policy's metadata (`rl.json`); `directory` is where it was read from, not saved."""

    algo: str
    base: str
    user: str  # the user kind trained on (agents.config.KINDS)
    train_users: tuple[int, ...]
    eval_users: tuple[int, ...]
    env: dict[str, Any]  # page_size, max_pages, n_candidates, explore_fraction, history_len
    config: dict[str, Any]  # ExperimentConfig.model_dump(mode="json")
    timesteps: int = 0  # steps actually trained
    stopped_by_budget: bool = False
    train_seconds: float | None = 0.0  # None: trained outside train-rl (a script's model), not timed
    offline_data: dict[str, Any] | None = None  # offline algorithms: behaviour policies, episodes, transitions
    action: str = ""  # the env action mode trained in ("" = the algorithm's default, ALGOS)
    members: tuple[int, ...] = (0,)  # response-model ensemble members trained against
    eval_member: int = 0  # the member the in-simulator evaluation uses
    directory: str = ""

    @property
    def action_mode(self) -> str:
        return self.action or ALGOS[self.algo][1]

    def experiment(self) -> ExperimentConfig:
        config = dict(self.config)
        if "rank_sources" not in config.get("rl", {}):  # trained before the rank features: no rank columns
            config["rl"] = {**config.get("rl", {}), "rank_sources": []}
        return ExperimentConfig.model_validate(config)

    def save(self, directory: Path) -> None:
        data = {k: v for k, v in asdict(self).items() if k != "directory"}
        (directory / META_FILE).write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, directory: Path) -> Checkpoint:
        path = Path(directory) / META_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: no {META_FILE}; not a `simrec train-rl` checkpoint directory")
        data = json.loads(path.read_text())
        data["train_users"] = tuple(data["train_users"])
        data["eval_users"] = tuple(data["eval_users"])
        data["members"] = tuple(data.get("members", (0,)))
        overlap = set(data["train_users"]) & set(data["eval_users"])
        if overlap:
            raise ValueError(f"{path}: {len(overlap)} personas are both trained on and evaluated, e.g. {min(overlap)}")
        return cls(**data, directory=str(directory))

    @property
    def offline(self) -> bool:
        return ALGOS[self.algo][0] == "d3rlpy"

    def load_model(self) -> Any:
        """The trained policy: an SB3 model, or an `experiments.rl.offline.OfflinePolicy` (same `predict`)."""
        if self.offline:
            from experiments.rl.offline import OFFLINE_MODEL_FILE, OfflinePolicy

            return OfflinePolicy.load(Path(self.directory) / OFFLINE_MODEL_FILE)
        import stable_baselines3

        sb3_class = getattr(stable_baselines3, ALGOS[self.algo][0])
        return sb3_class.load(str(Path(self.directory) / MODEL_FILE), device="cpu")
