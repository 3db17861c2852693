"""Wiring shared by the commands: data + personas, the LLM, user models and (cached) trained recommenders.

This is the only place that knows how the layers fit together; each command module stays a short script.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence

import numpy as np

from agents.config import LLMUserConfig, UserSpec, load_llm_feature_config, load_response_config
from agents.decision import GroundedDecider, ItemVectors
from agents.embedding import CachedEmbedder, Embedder, HashingEmbedder, MiniLMEmbedder
from agents.features import feature_names
from agents.llm_feature import build_stacked_decider
from agents.llm_user import LLMUserModel
from agents.llm_user.prompts import PromptBuilder
from agents.persona import build_personas
from agents.response import FitSources, ResponseModel, load_or_fit
from agents.silent_user import SilentUserModel
from experiments.config import ExperimentConfig
from experiments.engine import make_engine
from experiments.model_cache import cache_root, recommender_settings
from experiments.recommender_store import train_recommender
from experiments.world import World
from recommenders.candidate_features import unseen_log_ranks
from simenv.data import Dataset, Split, agent4rec_split, load_dataset
from simenv.llm import LLM, LLMConfig, make_llm
from simenv.protocols import Recommender, UserModel

log = logging.getLogger(__name__)
RESPONSE_MEMBER_STRIDE = 1000  # member m of an ensemble fits with seed run.seed + 1000 * m (no clash across runs)


def build_world(config: ExperimentConfig, n_personas: int | None = None) -> World:
    """Load the dataset, make the Agent4Rec split, build personas and sample `n_personas` of them (seeded;
    default `config.data.n_personas`, capped at the split's users)."""

    def make_split(dataset: Dataset) -> Split:
        return agent4rec_split(dataset, n_users=config.data.split_users, seed=config.run.seed)

    # the split is checked before the parsed data is cached: data nobody qualifies in leaves no cache entry
    dataset = load_dataset(config.data.dataset, cache_dir=cache_root(config) / "data", check=make_split)
    split = make_split(dataset)
    n = min(n_personas or config.data.n_personas, len(split.users))
    rng = np.random.default_rng([config.run.seed, 1])
    chosen = np.sort(rng.choice(split.users, size=n, replace=False))
    all_personas = build_personas(split)
    return World(dataset, split, {int(u): all_personas[int(u)] for u in chosen}, all_personas, make_engine(config))


def worker_setup(config: ExperimentConfig, n_personas: int | None = None) -> UserModelFactory:
    """What an engine worker builds once per config: the world (run locally inside the worker) and its factory."""
    world = build_world(config.model_copy(update={"engine": "local"}), n_personas)
    return UserModelFactory(config, world, None)


def build_embedder(config: ExperimentConfig) -> Embedder:
    if config.users.embedder == "hashing":
        return HashingEmbedder()
    return CachedEmbedder(MiniLMEmbedder(), cache_root(config) / "embeddings")


def llm_config(config: ExperimentConfig) -> LLMConfig:
    """The LLM layer's config from the experiment's [llm] section (the API key stays in the environment)."""
    section = config.llm
    return LLMConfig(
        backend=section.backend,
        model=section.model if section.backend == "openai" else None,
        model_path=section.model if section.backend in ("llama-cpp", "transformers") else None,
        base_url=section.base_url,
        http_client=section.http_client,
        temperature=section.temperature,
        concurrency=section.concurrency,
        timeout_s=section.timeout_s,
        max_retries=section.max_retries,
        structured_output=section.structured_output,
        schema_mode=section.schema_mode,
        seed=config.run.seed,
        cache_dir=str(cache_root(config) / "llm") if section.cache else None,
        max_calls=section.max_calls,
        max_total_tokens=section.max_total_tokens,
    )


def build_llm(config: ExperimentConfig) -> LLM:
    """Backend plus budget and cache wrappers; each policy adds its own call log around it."""
    return make_llm(llm_config(config))


def say(message: str) -> None:
    """A progress line on stdout, beside the run's tables (phases that can take minutes: never a silent stretch;
    stderr is kept for the one-line errors)."""
    print(f"simrec: {message}", flush=True)


def response_members(member: int | Sequence[int]) -> tuple[int, ...]:
    """The response-model ensemble members a `member=` argument names: one int, or several."""
    return (member,) if isinstance(member, int) else tuple(int(m) for m in member)


class UserModelFactory:
    """Builds a fresh user model per policy (fresh memories), sharing the expensive parts across calls:
    the embedder and item embeddings once, the fitted response model once, one decider per user kind."""

    def __init__(
        self,
        config: ExperimentConfig,
        world: World,
        llm: LLM | None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.world = world
        self.llm = llm
        self.progress = progress or say  # one line per phase of a first (uncached) response-model fit
        self._embedder: Embedder | None = None
        self._item_vectors: ItemVectors | None = None
        self._deciders: dict[tuple[str, int, tuple[str, ...] | None], GroundedDecider] = {}
        self._responses: dict[tuple[str, int, tuple[str, ...] | None], ResponseModel] = {}
        self._rankings: dict[tuple[str, int], tuple[dict[int, np.ndarray], np.ndarray]] = {}

    def response_seed(self, member: int) -> int:
        """The response-model seed of ensemble member `member` (its user folds, SVD and boosting draws): the run's
        seed for member 0 (the validated model), a disjoint seed per other member."""
        if member < 0:
            raise ValueError(f"response ensemble member {member}: must be >= 0")
        return self.config.run.seed + RESPONSE_MEMBER_STRIDE * member

    def response_model(
        self, feature_set: str, member: int = 0, sources: tuple[str, ...] | None = None
    ) -> ResponseModel:
        """The fitted response model for a feature set, fitted on every split user (cached on disk).

        `member` > 0 is another member of an ensemble: the same data and features, fitted with another seed
        (other user folds for the cross-fitting, other SVD and boosting draws), so the members disagree where the
        data leave the model uncertain; a policy trained on some members is scored on one it never saw.
        `sources` replaces the config's fit-impression sources (`simrec validate` leaves a policy's family out)."""
        if (feature_set, member, sources) not in self._responses:
            rc = load_response_config(feature_set, self.config.users.config_file, seed=self.response_seed(member))
            if sources is not None:
                rc = dataclasses.replace(rc, sources=sources)
            world = self.world
            vectors = None
            if "embedding" in feature_names(feature_set):
                vectors = self._vectors()
            key, candidates = "scorers", None
            if rc.candidates == "recommenders":
                key = json.dumps({n: recommender_settings(self.config, n) for n in rc.sources}, sort_keys=True)

                def candidates() -> FitSources:
                    tops, ranks = {}, {}
                    for i, name in enumerate(rc.sources, 1):
                        if self.progress:
                            self.progress(f"fit impressions {i}/{len(rc.sources)}: {name} (trained once, then cached)")
                        tops[name], ranks[name] = self._source_rankings(name, rc.top_n)
                    return FitSources(tops, ranks if rc.source_ranks else {})

            if vectors is not None:  # the item vectors are features: a model fitted on MiniLM's is not hashing's
                key = f"{key}|embedder={self.config.users.embedder}"
            self._responses[(feature_set, member, sources)] = load_or_fit(
                cache_root(self.config) / "response",
                world.split,
                world.population or world.personas,
                rc,
                candidates,
                key,
                vectors,
                self.progress,
                # a left-out-family user scores a few policies: its plans are predicted as its sessions ask
                lazy=sources is not None,
                # and shares the full fit's train-only parts (scorers, rating factorisation): only sources differ
                base=None if sources is None else lambda: self.response_model(feature_set, member),
            )
        return self._responses[(feature_set, member, sources)]

    def _source_rankings(self, name: str, top_n: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
        """`source_rankings` of fit source `name` over every split user, computed once per factory: the fits of
        validate's leave-one-source-out users and of other ensemble members share them (ML-1M: ~7 s a fit)."""
        key = (name, top_n)
        if key not in self._rankings:
            recommender = train_recommender(self.config, self.world, name)[0]
            users = np.array(sorted(self.world.population), dtype=np.int64)
            self._rankings[key] = source_rankings(recommender, self.world, users, top_n)
        return self._rankings[key]

    def _stacked(self, decider: GroundedDecider, user_config: LLMUserConfig, llm: LLM) -> GroundedDecider:
        """With `llm_feature`, the decider whose watch answer from `llm` is stacked on the response model with a
        weight fitted on the validation split (agents.llm_feature; probes are cached, outside the policy logs)."""
        if not user_config.decision.llm_feature:
            return decider
        world = self.world
        rc = load_response_config(
            user_config.decision.response, self.config.users.config_file, seed=self.config.run.seed
        )

        def candidates(users: np.ndarray) -> dict[str, dict[int, np.ndarray]]:
            return {
                n: top_unseen(train_recommender(self.config, world, n)[0], world, users, rc.top_n) for n in rc.sources
            }

        return build_stacked_decider(
            decider,
            llm,
            PromptBuilder(world.dataset, user_config),
            world.split,
            world.population or world.personas,
            load_llm_feature_config(self.config.users.config_file, seed=self.config.run.seed),
            candidates if rc.candidates == "recommenders" else None,
        )

    def _vectors(self) -> ItemVectors:
        if self._embedder is None:
            self._embedder = build_embedder(self.config)
            self._item_vectors = ItemVectors(self.world.dataset, self._embedder)
        assert self._item_vectors is not None
        return self._item_vectors

    def spec(self, kind: str | None = None) -> UserSpec:
        """The user kind `kind` (default: the config's `[users] kind`) from the config's users file."""
        return self.config.users.model_copy(update={"kind": kind or self.config.users.kind}).spec()

    def decider(
        self, spec: UserSpec, llm: LLM | None = None, member: int = 0, sources: tuple[str, ...] | None = None
    ) -> GroundedDecider:
        """The kind's decision rule (built once per kind, ensemble member and fit sources): the response model,
        hand-set signals, or the LLM feature stacked on the response model (which asks `llm`)."""
        key = (spec.kind, member, sources)
        if key not in self._deciders:
            decision = spec.decision
            if decision.w_embedding:
                self._vectors()
            decider = GroundedDecider(
                self.world.dataset,
                self.world.split.train,
                decision,
                embedder=self._embedder,
                item_vectors=self._item_vectors,
                response=self.response_model(decision.response, member, sources) if decision.response else None,
            )
            if decision.llm_feature:
                if llm is None:
                    raise ValueError(
                        f"user kind {spec.kind!r} stacks the LLM's answer: it needs an LLM ([llm] backend)"
                    )
                decider = self._stacked(decider, spec.user, llm)
            self._deciders[key] = decider
        return self._deciders[key]

    def __call__(
        self,
        llm: LLM | None = None,
        *,
        kind: str | None = None,
        member: int | Sequence[int] = 0,
        sources: tuple[str, ...] | None = None,
    ) -> UserModel:
        """A fresh user model of `kind` (default: the config's `[users] kind`): a `SilentUserModel` for the
        no-text kinds, an `LLMUserModel` (memory, words) for the others; both decide by `decider(spec)`, whose
        response model is ensemble member `member` (0 = the validated one), fitted on the impressions of
        `sources` (default: the config's). Several members (no-text kinds only) give an `EnsembleUserModel` that
        decides each session by one of them, drawn per episode: what `simrec train-rl` trains against."""
        spec = self.spec(kind)
        world = self.world
        members = response_members(member)
        if len(members) != 1:
            return self._ensemble(spec, members, sources)
        member = members[0]
        if not spec.writes_text:
            return SilentUserModel(self.decider(spec, member=member, sources=sources), world.personas.values())
        llm = llm or self.llm
        if llm is None:
            raise ValueError(f"user kind {spec.kind!r} writes text: it needs an LLM ([llm] backend)")
        self._vectors()
        decider = self.decider(spec, self.llm or llm, member, sources)
        return LLMUserModel(world.dataset, llm, self._embedder, spec.user, train=world.split.train, decider=decider)

    def _ensemble(self, spec: UserSpec, members: tuple[int, ...], sources: tuple[str, ...] | None) -> UserModel:
        """The no-text kind `spec` deciding each session by one of `members`, drawn at its start."""
        if not members:
            raise ValueError("response members: none given")
        if spec.writes_text:
            raise ValueError(
                f"response members {list(members)}: an ensemble needs a no-text user kind, not {spec.kind!r}"
            )
        from agents.ensemble_user import EnsembleUserModel

        personas = self.world.personas.values()
        return EnsembleUserModel(
            [SilentUserModel(self.decider(spec, member=m, sources=sources), personas) for m in members]
        )


def top_unseen(recommender: Recommender, world: World, users: np.ndarray, k: int) -> dict[int, np.ndarray]:
    """Each user's top-k items by `recommender` among those not in their train history (fit impressions)."""
    return source_rankings(recommender, world, users, k)[0]


def source_rankings(
    recommender: Recommender, world: World, users: np.ndarray, k: int
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Each user's top-k items by `recommender` among those not in their train history (fit impressions), and
    the (n_users, n_items) float16 log1p rank of every item among each user's unseen ones, seen items last (the
    rank features of agents.features; rows of users not in `users` rank every item last)."""
    seen = world.split.train.groupby("user_id")["item_id"].agg(lambda s: s.to_numpy(np.int64))
    n_items = world.dataset.n_items
    ranks = np.full((world.dataset.n_users, n_items), np.log1p(n_items - 1), dtype=np.float16)
    out: dict[int, np.ndarray] = {}
    score_batch = getattr(recommender, "score_batch", None)
    empty = np.zeros(0, dtype=np.int64)
    for start in range(0, len(users), 256):
        chunk = users[start : start + 256]
        if score_batch is not None:
            scores = np.array(score_batch(chunk), dtype=np.float64)
        else:
            scores = np.stack([np.asarray(recommender.score(int(u), ()), dtype=np.float64) for u in chunk])
        order, ranks[chunk] = unseen_log_ranks(scores, [seen.get(u, empty) for u in chunk.tolist()])
        for row, u in enumerate(chunk.tolist()):
            out[u] = order[row, :k]
    return out, ranks
