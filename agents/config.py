"""User-model configurations: typed frozen dataclasses loaded from named profiles in `users.toml`.

The numbers live in `experiments/configs/users.toml` (one place, commented); the dataclass defaults here are
only the fallbacks a unit test gets when it builds a config by hand. `load_llm_user_config("grounded")` and
`load_fast_user_config()` are what runs use.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from simenv.errors import ConfigError as ConfigError  # the one config error, re-exported

SIGNALS = ("llm", "genre", "embedding", "collab", "popularity")


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """Retrieval weights (generative-agents style) and the reflection trigger.

    recency = decay ** (now - t) with t in simulation time (pages shown to this user); each score component is
    min-max normalised over the candidates before weighting.
    """

    decay: float = 0.9
    w_recency: float = 1.0
    w_importance: float = 1.0
    w_relevance: float = 1.0
    top_k: int = 3
    reflection_threshold: float = 60.0
    reflection_window: int = 12
    importance_factual: float = 2.0
    importance_by_strength: tuple[float, float, float] = (2.0, 4.0, 7.0)
    importance_leave: float = 3.0


@dataclass(frozen=True, slots=True)
class LeaveConfig:
    """Logistic leave model: logit = base + fatigue*page + activity*(activity-2) + satisfaction*(liked share-0.5)
    + llm*(+1 if the LLM said leave else -1). Positive `fatigue` makes later pages likelier exits; a negative
    `activity` coefficient keeps active users longer."""

    base: float = -1.6
    fatigue: float = 0.35
    activity: float = -0.5
    satisfaction: float = -1.5
    llm: float = 0.0


@dataclass(frozen=True, slots=True)
class DecisionConfig:
    """How a page decision is composed from signals (see agents/decision.py for the rule).

    watch logit = bias(persona) + sum_s w_s * z_s(persona, item), where z_s are per-persona standardised signals
    and `llm` is +1/-1 from the LLM's watch answer. With `calibrate` the bias is solved so that the mean watch
    probability over the whole catalog equals `watch_rate[activity-1]`; otherwise bias = 0.
    `decide` = "sample" draws each watch from Bernoulli(sigmoid(logit)) with the session rng; "threshold"
    watches when logit > 0.
    Ratings: r = (1-rating_llm)*baseline + rating_llm*llm_rating, mapped to 1..5 by per-persona cut points fitted
    on the train split (so the simulated histogram follows the persona's real one); with rating_llm == 1 the
    LLM's rating is used as given. `rating_noise` > 0 adds logistic noise of that scale (sampled ratings);
    `rating_spread` blends the fitted cut points (1) with plain rounding (0): a trade of KL against RMSE.
    """

    name: str = "grounded"
    w_llm: float = 0.0
    w_genre: float = 1.0
    w_embedding: float = 0.0
    w_collab: float = 0.0
    w_popularity: float = 0.0
    calibrate: bool = True
    watch_rate: tuple[float, float, float] = (0.05, 0.08, 0.12)
    decide: Literal["sample", "threshold"] = "sample"
    rating_llm: float = 0.0
    rating_noise: float = 0.0
    rating_spread: float = 1.0
    interview_llm: float = 0.0
    # A feature set of the fitted response model (agents.response, e.g. "full", "nocollab"): when set, the watch
    # logit and the rating come from it and the hand-set signal weights, watch_rate and rating_* are unused.
    response: str = ""
    # "watch": the LLM's watch answer is a feature stacked on the response model with a weight fitted on the
    # validation split (agents.llm_feature); needs `response`. "" = the LLM does not enter the watch decision.
    llm_feature: str = ""
    leave: LeaveConfig = field(default_factory=LeaveConfig)

    def weight(self, signal: str) -> float:
        return float(getattr(self, f"w_{signal}"))

    @property
    def uses_page_answer(self) -> bool:
        """True when the LLM's per-page watch, rating or leave answer changes a decision."""
        return self.w_llm != 0.0 or self.rating_llm != 0.0 or self.leave.llm != 0.0

    @property
    def uses_llm(self) -> bool:
        return (
            self.w_llm != 0.0
            or self.rating_llm != 0.0
            or self.leave.llm != 0.0
            or self.interview_llm != 0.0
            or bool(self.llm_feature)
        )


@dataclass(frozen=True, slots=True)
class LLMUserConfig:
    """Everything the LLM persona user needs besides the dataset, LLM and embedder."""

    decision: DecisionConfig = field(default_factory=DecisionConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    max_repairs: int = 2
    temperature: float = 0.0
    template_version: int = 1
    # "decide": the LLM answers watch/rating/leave per item (page_decision); "narrate": the grounded rule decides
    # first and the LLM only writes feelings and the leave reason (page_reaction); "auto": narrate exactly when
    # the decision profile would discard the LLM's numbers (`not decision.uses_page_answer`).
    page_prompt: Literal["auto", "decide", "narrate"] = "auto"
    # Repairs for page_reaction answers (text only: a repair re-asks a whole page to get better words, so 0 by
    # default; an unusable answer is a recorded fallback with plain default text).
    text_repairs: int = 0

    @property
    def narrates(self) -> bool:
        """True when pages are decided by the grounded rule and the LLM only writes their text."""
        if self.page_prompt == "auto":
            return not self.decision.uses_page_answer
        return self.page_prompt == "narrate"


@dataclass(frozen=True, slots=True)
class FastUserConfig:
    """The multinomial-logit user: utility = genre*z_genre + popularity*conformity_scale*z_pop - position*pos;
    the null option's utility is calibrated per persona to `watch_rate[activity-1]` and grows by `fatigue`
    per page. Ratings use the shared rating model with logistic noise `rating_noise`."""

    genre: float = 1.5
    popularity: float = 0.8
    conformity_scale: tuple[float, float, float] = (1.5, 1.0, 0.5)
    position: float = 0.05
    fatigue: float = 0.15
    watch_rate: tuple[float, float, float] = (0.05, 0.08, 0.12)
    rating_noise: float = 0.3
    rating_spread: float = 1.0
    # As DecisionConfig.response: a fitted response-model feature set replaces the hand-set utility (the null
    # utility is then 0, so an item's watch probability on page 0 at position 0 is the fitted one).
    response: str = ""
    leave: LeaveConfig = field(default_factory=LeaveConfig)


@dataclass(frozen=True)
class ResponseConfig:
    """How the fitted response model (agents.response) is fitted; every field is part of its cache key.

    `level`: "heldout" scales P(in valid | shown) by `heldout_scale` to the held-out consumption level (valid
    or test; in the Agent4Rec split they are equal random shares, so 2.0); "valid" keeps it. `candidates`:
    "recommenders" fits on the standard recommenders' top-`top_n` per user (what recommenders show),
    "scorers" on the train-only scorers' top items; both plus `n_random` random unseen items.
    """

    feature_set: str = "full"
    level: Literal["heldout", "valid"] = "heldout"
    heldout_scale: float = 2.0
    candidates: Literal["recommenders", "scorers"] = "recommenders"
    sources: tuple[str, ...] = ("pop", "mf", "multvae", "lightgcn", "sasrec")
    folds: int = 2
    top_n: int = 20
    n_random: int = 100
    max_iter: int = 150
    learning_rate: float = 0.06
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 80
    l2_regularization: float = 1.0
    rating_noise: float = 0.0
    rating_spread: float = 0.6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.level not in ("heldout", "valid"):
            raise ValueError(f"response level must be 'heldout' or 'valid', got {self.level!r}")
        if self.candidates not in ("recommenders", "scorers"):
            raise ValueError(f"response candidates must be 'recommenders' or 'scorers', got {self.candidates!r}")
        if self.folds < 2:
            raise ValueError(f"response folds must be >= 2 (cross-fitting), got {self.folds}")

    @property
    def scale(self) -> float:
        return self.heldout_scale if self.level == "heldout" else 1.0


@dataclass(frozen=True)
class LLMFeatureConfig:
    """How the LLM's watch answer is stacked on the response model (agents.llm_feature), from `[llm_feature]`.

    The weights are fitted on a seeded sample of `n_users` split users' fit impressions: per user at most
    `max_positives` VALID items and `n_negatives` other items (inverse-probability weighted, so the fit sees the
    impression distribution), probed `probe_page_size` items per page_decision call; `c` is the inverse L2
    strength of the logistic regression. The LLM cost of the fit is at most n_users * (max_positives +
    n_negatives) item answers.
    """

    n_users: int = 120
    max_positives: int = 3
    n_negatives: int = 5
    probe_page_size: int = 4
    max_repairs: int = 1
    c: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_users", "max_positives", "n_negatives", "probe_page_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"llm_feature {name} must be >= 1, got {getattr(self, name)!r}")
        if self.c <= 0:
            raise ValueError(f"llm_feature c must be > 0, got {self.c!r}")


def default_config_path() -> Path:
    """The packaged `experiments/configs/users.toml` (read as a data file; no experiments code is imported)."""
    spec_root = resources.files("experiments") / "configs" / "users.toml"
    return Path(str(spec_root))


def _read(path: Path | None) -> tuple[Path, dict[str, Any]]:
    path = Path(path) if path is not None else default_config_path()
    try:
        with path.open("rb") as fh:
            return path, tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"user config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Construct a config dataclass from a TOML table, rejecting unknown keys and coercing tuples."""
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _validate_decision(cfg: DecisionConfig, where: str) -> DecisionConfig:
    if cfg.decide not in ("sample", "threshold"):
        raise ConfigError(f"{where}: decide must be 'sample' or 'threshold', got {cfg.decide!r}")
    if len(cfg.watch_rate) != 3 or not all(0.0 < r < 1.0 for r in cfg.watch_rate):
        raise ConfigError(f"{where}: watch_rate must be three rates in (0, 1), got {cfg.watch_rate!r}")
    for name in ("rating_llm", "interview_llm", "rating_spread"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ConfigError(f"{where}: {name} must be in [0, 1], got {getattr(cfg, name)!r}")
    if cfg.llm_feature not in ("", "watch"):
        raise ConfigError(f"{where}: llm_feature must be '' or 'watch', got {cfg.llm_feature!r}")
    if cfg.llm_feature and not cfg.response:
        raise ConfigError(f"{where}: llm_feature = {cfg.llm_feature!r} is stacked on the response model; set response")
    return cfg


def profile_names(path: Path | None = None) -> tuple[str, ...]:
    """Names of the decision profiles in the config file."""
    _, data = _read(path)
    return tuple(data.get("profiles", {}))


def load_decision_config(profile: str | None = None, path: Path | None = None) -> DecisionConfig:
    """A `[profiles.<name>]` table merged over `[decision]` (the shared base); `profile=None` uses `default`."""
    path, data = _read(path)
    profile = profile or data.get("default", "grounded")
    profiles = data.get("profiles", {})
    if profile not in profiles:
        raise ConfigError(f"{path}: no profile {profile!r} (have: {', '.join(profiles)})")
    merged = {**data.get("decision", {}), **profiles[profile]}
    leave_table = {**data.get("leave", {}), **merged.pop("leave", {})}
    leave = _build(LeaveConfig, leave_table, f"{path} [leave]")
    cfg = _build(DecisionConfig, {**merged, "name": profile}, f"{path} [profiles.{profile}]")
    return _validate_decision(replace(cfg, leave=leave), f"{path} [profiles.{profile}]")


def load_llm_user_config(profile: str | None = None, path: Path | None = None) -> LLMUserConfig:
    """The LLM user's full config: a decision profile plus the `[memory]` and `[llm_user]` tables."""
    decision = load_decision_config(profile, path)
    path, data = _read(path)
    memory = _build(MemoryConfig, data.get("memory", {}), f"{path} [memory]")
    where = f"{path} [llm_user]"
    rest = _build(LLMUserConfig, data.get("llm_user", {}), where)
    if rest.page_prompt not in ("auto", "decide", "narrate"):
        raise ConfigError(f"{where}: page_prompt must be 'auto', 'decide' or 'narrate', got {rest.page_prompt!r}")
    if rest.page_prompt == "narrate" and decision.uses_page_answer:
        raise ConfigError(
            f"{where}: page_prompt = 'narrate' but profile {decision.name!r} uses the LLM's page answer "
            "(w_llm, rating_llm or leave.llm is non-zero); use 'decide' or 'auto'"
        )
    return replace(rest, decision=decision, memory=memory)


def load_response_config(feature_set: str, path: Path | None = None, seed: int = 0) -> ResponseConfig:
    """The `[response]` table with the profile's feature set and the run's seed."""
    path, data = _read(path)
    values = {**data.get("response", {}), "feature_set": feature_set, "seed": seed}
    try:
        return _build(ResponseConfig, values, f"{path} [response]")
    except ValueError as exc:
        raise ConfigError(f"{path} [response]: {exc}") from exc


def load_llm_feature_config(path: Path | None = None, seed: int = 0) -> LLMFeatureConfig:
    """The `[llm_feature]` table with the run's seed."""
    path, data = _read(path)
    try:
        return _build(LLMFeatureConfig, {**data.get("llm_feature", {}), "seed": seed}, f"{path} [llm_feature]")
    except ValueError as exc:
        raise ConfigError(f"{path} [llm_feature]: {exc}") from exc


def load_fast_user_config(path: Path | None = None) -> FastUserConfig:
    """The fast user's `[fast]` table (its `leave` sub-table merged over the shared `[leave]`)."""
    path, data = _read(path)
    table = dict(data.get("fast", {}))
    leave_table = {**data.get("leave", {}), **table.pop("leave", {})}
    leave = _build(LeaveConfig, leave_table, f"{path} [fast.leave]")
    cfg = _build(FastUserConfig, table, f"{path} [fast]")
    return replace(cfg, leave=leave)
