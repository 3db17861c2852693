"""The LLM's watch answer as a fitted feature (agents.llm_feature): a planted signal earns a positive weight and
raises AUC, an answer without information earns ~0, and the LLM user's decisions follow the stacked weights."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from agents.config import ConfigError, LLMFeatureConfig, ResponseConfig, load_user
from agents.decision import GroundedDecider
from agents.embedding import HashingEmbedder
from agents.llm_feature import LLMAnswers, LLMStack, StackedDecider, StackWeights, build_stacked_decider
from agents.llm_user import LLMUserModel
from agents.llm_user.prompts import PromptBuilder
from agents.persona import build_personas
from agents.response import fit_response_model
from simenv.data import agent4rec_split
from simenv.llm import MockLLM
from simenv.llm.types import LLMRequest, LLMResponse
from simenv.records import Page
from tests.fixtures_agents import planted_dataset

RESPONSE = ResponseConfig(feature_set="nocollab", candidates="scorers", max_iter=60, seed=0)
FEATURE = LLMFeatureConfig(n_users=200, max_positives=3, n_negatives=5, seed=0)


class AnswerLLM:
    """A test double on the public LLM protocol: page_decision watch answers from `says_yes(user, item, rng)`
    (the rng seeded by user and item, so answers do not depend on call order); other templates go to the mock."""

    name = "planted"
    model = "planted"

    def __init__(self, says_yes, seed: int = 0) -> None:
        self.says_yes = says_yes
        self.seed = seed
        self.mock = MockLLM(seed=seed)
        self.n_page_calls = 0

    def complete(self, request: LLMRequest) -> LLMResponse:
        if request.template != "page_decision":
            return self.mock.complete(request)
        self.n_page_calls += 1
        user = int(request.context["user_id"])
        items = []
        for i in request.context["item_ids"]:
            rng = np.random.default_rng([self.seed, user, int(i)])
            watch = bool(self.says_yes(user, int(i), rng))
            items.append({"id": int(i), "watch": watch, "rating": 4 if watch else 2, "feeling": "Looks good."})
        text = json.dumps({"items": items, "leave": False, "reason": "I want to see more."})
        return LLMResponse(text=text, backend=self.name, model=self.model, call_id=request.call_id())

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        return [self.complete(r) for r in requests]


@pytest.fixture(scope="module", name="world")
def world_fixture():
    dataset, _ = planted_dataset(n_users=240, n_items=240, seed=3)
    split = agent4rec_split(dataset, n_users=None, seed=0, min_liked=5)
    personas = build_personas(split)
    response = fit_response_model(split, personas, RESPONSE)
    heldout: dict[int, set[int]] = {}
    for frame in (split.valid, split.test):
        for u, i in zip(frame["user_id"].tolist(), frame["item_id"].tolist(), strict=True):
            heldout.setdefault(int(u), set()).add(int(i))
    return split, personas, response, heldout


def planted(heldout: dict[int, set[int]]):
    """Says yes for the user's real held-out items with probability 0.8, else 0.2."""
    return lambda user, item, rng: rng.random() < (0.8 if item in heldout.get(user, ()) else 0.2)


def fit(world, llm) -> LLMStack:
    split, personas, response, _ = world
    prompts = PromptBuilder(split.dataset, load_user("llm").user)
    return build_stacked_decider(
        GroundedDecider(split.dataset, split.train, load_user("llm").decision, response=response),
        llm,
        prompts,
        split,
        personas,
        FEATURE,
    ).stack


def test_auc(world, stack: LLMStack) -> tuple[float, float]:
    """Pooled AUC on TEST membership (test items vs never-rated items, 5 + 15 per persona) of the response
    model's probability and of the stacked one."""
    split, personas, _, _ = world
    rated = split.dataset.interactions.groupby("user_id")["item_id"].agg(set)
    test = split.test.groupby("user_id")["item_id"].agg(list)
    rng = np.random.default_rng(5)
    base, stacked, label = [], [], []
    for u, persona in list(personas.items())[:120]:
        pos = rng.choice(test[u], size=min(5, len(test[u])), replace=False)
        never = np.setdiff1d(np.arange(split.dataset.n_items), list(rated[u]))
        items = np.concatenate([pos, rng.choice(never, size=15, replace=False)])
        base.append(stack.base_probability(persona, items))
        stacked.append(stack.probability(persona, items))
        label.append(np.arange(items.size) < pos.size)
    y = np.concatenate(label)
    return roc_auc_score(y, np.concatenate(base)), roc_auc_score(y, np.concatenate(stacked))


test_auc.__test__ = False  # a helper, not a test


def test_planted_signal_gets_positive_weight_and_raises_auc(world) -> None:
    llm = AnswerLLM(planted(world[3]))
    stack = fit(world, llm)
    report = stack.report
    assert report.n_pairs <= FEATURE.n_users * (FEATURE.max_positives + FEATURE.n_negatives)  # bounded LLM cost
    assert llm.n_page_calls == report.n_llm_calls <= -(-report.n_pairs // FEATURE.probe_page_size) + len(world[1])
    assert all(f["b"] > 1.0 for f in report.folds), report.folds  # true log-odds ratio of the plant: ln 16 = 2.8
    assert report.auc_valid_stacked > report.auc_valid_response + 0.03
    assert report.applied and report.logloss_valid_stacked < report.logloss_valid_response
    base_auc, stacked_auc = test_auc(world, stack)
    assert stacked_auc > base_auc + 0.03, (base_auc, stacked_auc)


def test_uninformative_answer_gets_no_weight_and_leaves_auc(world) -> None:
    stack = fit(world, AnswerLLM(lambda user, item, rng: True))
    assert stack.report.llm_yes_rate == 1.0
    assert all(abs(f["b"]) < 0.05 for f in stack.report.folds), stack.report.folds
    assert not stack.report.applied
    base_auc, stacked_auc = test_auc(world, stack)
    assert stacked_auc == base_auc, (base_auc, stacked_auc)  # a constant answer leaves every decision as fitted's


def test_noise_answer_gets_near_zero_weight(world) -> None:
    """Answers independent of the user's real items (a coin flip) earn a weight near 0, far below the plant's,
    and do not earn a place in the decisions (out-of-fold validation log-loss not lowered)."""
    llm = AnswerLLM(lambda user, item, rng: rng.random() < 0.5)
    stack = fit(world, llm)
    assert abs(stack.report.weights["b"]) < 0.5, stack.report.folds
    assert not stack.report.applied, (stack.report.logloss_valid_response, stack.report.logloss_valid_stacked)
    persona, calls = next(iter(world[1].values())), llm.n_page_calls
    ids = np.setdiff1d(np.arange(40), persona.train_items)
    assert np.array_equal(stack.probability(persona, ids), stack.base_probability(persona, ids))  # fitted's
    assert llm.n_page_calls == calls  # decisions without the weight never ask the LLM
    assert not np.array_equal(
        stack.probabilities([(persona, ids)], candidate=True)[0], stack.base_probability(persona, ids)
    )


def test_llm_user_decides_by_the_stacked_weights(world) -> None:
    """Sessions of the LLM user with a stacked decider watch what the LLM says yes to far more often when its
    weight is large (the hot path reads the stack, not the response model alone)."""
    split, personas, response, _ = world
    says = lambda user, item, rng: (user + item) % 2 == 0  # noqa: E731
    config = load_user("llm").user
    llm = AnswerLLM(says)
    answers = LLMAnswers(llm, PromptBuilder(split.dataset, config))
    decision = load_user("llm").decision
    watched_yes, watched_no = [], []
    for b in (0.0, 6.0):
        stack = LLMStack(response, answers, dict(response.folds), [StackWeights(1.0, b, 0.0)] * 2, 0.5, None)
        decider = StackedDecider(split.dataset, split.train, decision, response=response, stack=stack)
        model = LLMUserModel(split.dataset, llm, HashingEmbedder(), config, train=split.train, decider=decider)
        rng = np.random.default_rng(11)
        yes = no = 0
        for u, persona in list(personas.items())[:80]:
            unseen = np.setdiff1d(np.arange(split.dataset.n_items), persona.train_items)
            ids = tuple(int(i) for i in rng.choice(unseen, size=4, replace=False))
            session = model.start_session(persona, 0, np.random.default_rng([11, u]))
            (feedback,) = model.react_batch([session], [(Page(0, 0, ids), [split.dataset.catalog[i] for i in ids])])
            for r in feedback.reactions:
                if says(u, r.item_id, None):
                    yes += r.watched
                else:
                    no += r.watched
        watched_yes.append(yes)
        watched_no.append(no)
    assert watched_yes[1] > 3 * max(watched_no[1], 1), (watched_yes, watched_no)
    assert watched_yes[1] > watched_yes[0] and watched_no[1] < watched_no[0] + 1, (watched_yes, watched_no)


def test_llm_feature_needs_response_model(tmp_path) -> None:
    path = tmp_path / "users.toml"
    path.write_text('[kinds.bad]\ntext = true\nllm_feature = "watch"\n')
    with pytest.raises(ConfigError, match=r"\[kinds.bad\].*llm_feature.*response"):
        load_user("bad", path)
    path.write_text('[kinds.bad]\ntext = true\nresponse = "full"\nllm_feature = "rating"\n')
    with pytest.raises(ConfigError, match=r"llm_feature must be '' or 'watch', got 'rating'"):
        load_user("bad", path)


def test_validate_reports_the_llm_feature(tmp_path) -> None:
    """`simrec validate --users.kind llm` on synthetic data with the mock LLM: validity.json holds the
    fitted weights and the response-vs-stacked comparison on the same shown pairs, validity.md its section."""
    from experiments.config import load_config
    from experiments.validate import run_validate

    (tmp_path / "recs.toml").write_text(
        "[models.mf]\nepochs = 10\neval_every = 1000\n[models.lightgcn]\nepochs = 2\neval_every = 1000\n"
        "[models.multvae]\nepochs = 2\neval_every = 1000\n[models.sasrec]\nepochs = 1\neval_every = 1000\n"
    )
    config = load_config(
        None,
        {
            "run": {"name": "v", "out_dir": str(tmp_path / "runs")},
            "data": {"dataset": "synthetic", "cache_dir": str(tmp_path / "cache")},
            "users": {"kind": "llm", "embedder": "hashing"},
            "llm": {"backend": "mock"},
            "validity": {"policies": ["random", "pop", "mf"], "n_personas": 40, "bootstrap": 50},
            "recommenders": {"config_file": str(tmp_path / "recs.toml")},
        },
    )
    run_dir = run_validate(config)
    result = json.loads((run_dir / "validity.json").read_text())
    block = result["llm_feature"]
    fit = block["fit"]
    assert len(fit["folds"]) == 2 and {"a", "b", "c"} <= set(fit["weights"])
    assert 0 < fit["n_positive"] < fit["n_pairs"] <= FEATURE.n_users * (FEATURE.max_positives + FEATURE.n_negatives)
    assert fit["run_answers"] >= fit["n_pairs"]  # the fit's answers plus the shown pairs'
    decisions = "stacked" if fit["applied"] else "response"  # the decisions' own probability
    assert block["auc_watch_test"][decisions] == pytest.approx(result["auc_watch_test"], abs=1e-6)
    assert 0.5 < block["auc_watch_test"]["response"] <= 1.0
    for key in ("p_view_vs_real_hit", "p_like_vs_real_like"):
        assert set(block["expected_spearman"][key]) == {"response", "stacked"}
    assert set(block["expected_p_view"]) == {"random", "pop", "mf"}
    assert "The LLM's contribution" in (run_dir / "validity.md").read_text()
