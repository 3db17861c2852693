"""User-model configurations: typed frozen dataclasses, and the named user kinds built from them.

The defaults live here, once: every dataclass field's default is the value every entry point uses (the gym ids,
the library builders, the CLI and `simrec validate`). `users.toml` names the user kinds (`[kinds.<name>]`, each
only the fields it changes) and may override any table (`[response]`, `[memory]`, ...); the packaged file
holds nothing but the kinds. `load_user("fitted")` is what every run uses; `DEFAULT_KIND` is the validated one.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from simenv.errors import ConfigError as ConfigError  # the one config error, re-exported


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

    name: str = "base"
    w_llm: float = 0.0
    w_genre: float = 0.0
    w_embedding: float = 0.0
    w_collab: float = 0.0
    w_popularity: float = 0.0
    calibrate: bool = True
    watch_rate: tuple[float, float, float] = (0.15, 0.22, 0.3)  # mean P(watch) over the catalog, activity 1..3
    decide: Literal["sample", "threshold"] = "sample"
    rating_llm: float = 0.0
    rating_noise: float = 0.0
    rating_spread: float = 0.8  # 1 = star histogram follows the persona's, 0 = rounded baseline (RMSE vs KL)
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


@dataclass(frozen=True)
class ResponseConfig:
    """How the fitted response model (agents.response) is fitted; every field is part of its cache key.

    `level`: "heldout" scales P(in valid | shown) by `heldout_scale` to the held-out consumption level (valid
    or test; in the Agent4Rec split they are equal random shares, so 2.0); "valid" keeps it. `candidates`:
    "recommenders" fits on the standard recommenders' top-`top_n` per user (what recommenders show),
    "scorers" on the train-only scorers' top items; both plus `n_random` random unseen items. `source_ranks`
    (with "recommenders"): each source's rank of every unseen item is also a feature (agents.features). The
    rating is a like classifier with an ordinal star distribution on its logit (agents.rating_model), with the
    same boosting settings; `rating_factors` is the rank of the TRAIN-rating factorisation whose prediction is one
    of its features (agents.rating_factors; 0 = none).
    """

    feature_set: str = "full"
    level: Literal["heldout", "valid"] = "heldout"
    heldout_scale: float = 2.0
    candidates: Literal["recommenders", "scorers"] = "recommenders"
    sources: tuple[str, ...] = ("pop", "mf", "multvae", "lightgcn", "sasrec")
    source_ranks: bool = True
    rating_factors: int = 10
    folds: int = 2
    top_n: int = 20
    n_random: int = 100
    max_iter: int = 150
    learning_rate: float = 0.06
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 80
    l2_regularization: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.level not in ("heldout", "valid"):
            raise ValueError(f"response level must be 'heldout' or 'valid', got {self.level!r}")
        if self.candidates not in ("recommenders", "scorers"):
            raise ValueError(f"response candidates must be 'recommenders' or 'scorers', got {self.candidates!r}")
        if self.folds < 2:
            raise ValueError(f"response folds must be >= 2 (cross-fitting), got {self.folds}")
        if self.rating_factors < 0:
            raise ValueError(f"response rating_factors must be >= 0 (0 = none), got {self.rating_factors}")

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


KINDS = ("fitted", "persona", "llm", "llm-only", "handset")
"""The user kinds `users.toml` ships (docs/USERS.md): what a user decides by, and whether an LLM writes its text."""
DEFAULT_KIND = "fitted"
"""The validated user: decisions from the response model fitted to real consumption, no LLM."""


@dataclass(frozen=True)
class UserSpec:
    """One named user kind, fully resolved: `writes_text` users are LLM persona agents (memory, reflection,
    feelings, interview); the others decide by the same rule and write no text (no LLM needed)."""

    kind: str
    writes_text: bool
    user: LLMUserConfig

    @property
    def decision(self) -> DecisionConfig:
        return self.user.decision


def default_config_path() -> Path:
    """The packaged `agents/configs/users.toml` (the user kinds)."""
    return Path(str(resources.files("agents") / "configs" / "users.toml"))


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
    except (TypeError, ValueError) as exc:
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


def kind_names(path: Path | None = None) -> tuple[str, ...]:
    """Names of the user kinds in the config file."""
    _, data = _read(path)
    return tuple(data.get("kinds", {}))


def load_user(kind: str | None = None, path: Path | None = None) -> UserSpec:
    """The user kind `kind` (None: the file's `default`, else `DEFAULT_KIND`): its `[kinds.<name>]` table over the
    dataclass defaults, with the file's `[leave]`, `[memory]` and `[llm_user]` overrides."""
    path, data = _read(path)
    kind = kind or data.get("default", DEFAULT_KIND)
    kinds = data.get("kinds", {})
    if kind not in kinds:
        raise ConfigError(f"{path}: no user kind {kind!r} (have: {', '.join(kinds)})")
    where = f"{path} [kinds.{kind}]"
    table = dict(kinds[kind])
    writes_text = table.pop("text", False)
    if not isinstance(writes_text, bool):
        raise ConfigError(f"{where}: text must be true or false, got {writes_text!r}")
    leave = _build(LeaveConfig, {**data.get("leave", {}), **table.pop("leave", {})}, f"{where} leave")
    decision = _validate_decision(replace(_build(DecisionConfig, {**table, "name": kind}, where), leave=leave), where)
    memory = _build(MemoryConfig, data.get("memory", {}), f"{path} [memory]")
    rest = _build(LLMUserConfig, data.get("llm_user", {}), f"{path} [llm_user]")
    if rest.page_prompt not in ("auto", "decide", "narrate"):
        raise ConfigError(
            f"{path} [llm_user]: page_prompt must be 'auto', 'decide' or 'narrate', got {rest.page_prompt!r}"
        )
    if rest.page_prompt == "narrate" and decision.uses_page_answer:
        raise ConfigError(
            f"{path} [llm_user]: page_prompt = 'narrate' but kind {kind!r} uses the LLM's page answer "
            "(w_llm, rating_llm or leave.llm is non-zero); use 'decide' or 'auto'"
        )
    if not writes_text and (decision.uses_page_answer or decision.llm_feature or decision.interview_llm):
        raise ConfigError(f"{where}: decisions use the LLM's answer, so the kind needs text = true")
    return UserSpec(kind, writes_text, replace(rest, decision=decision, memory=memory))


def load_response_config(feature_set: str, path: Path | None = None, seed: int = 0) -> ResponseConfig:
    """The response model's config: the dataclass defaults, the file's `[response]` overrides, the kind's feature
    set and the run's seed."""
    path, data = _read(path)
    values = {**data.get("response", {}), "feature_set": feature_set, "seed": seed}
    return _build(ResponseConfig, values, f"{path} [response]")


def load_llm_feature_config(path: Path | None = None, seed: int = 0) -> LLMFeatureConfig:
    """The LLM-feature stack's config: defaults, the file's `[llm_feature]` overrides and the run's seed."""
    path, data = _read(path)
    return _build(LLMFeatureConfig, {**data.get("llm_feature", {}), "seed": seed}, f"{path} [llm_feature]")
