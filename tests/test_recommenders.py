"""Behaviour of the non-LLM recommenders: they learn planted structure, honour exclusions, round-trip
through save/load, reproduce under a seed, expose correct propensities, and react within a session."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommenders.evaluation import evaluate_split
from recommenders.registry import REGISTRY, load, make
from simenv.protocols import Recommender
from simenv.records import ItemReaction, Page, PageFeedback
from tests.fixtures_recommenders import (  # noqa: F401  (the *_fixture names register pytest fixtures)
    FAST_CONFIGS,
    TRAINED,
    fit,
    fitted_fixture,
    loo_split_fixture,
    random_split_fixture,
    rng,
    synthetic_fixture,
    train_items,
)


def test_registry_names_and_errors() -> None:
    assert set(REGISTRY) == {"random", "pop", "pop-head", "mf", "multvae", "lightgcn", "sasrec", "llm-rank"}
    with pytest.raises(KeyError, match="known: .*lightgcn.*sasrec"):
        make("bpr-mf")
    with pytest.raises(TypeError, match="unknown MFConfig field.*'dimension'"):
        make("mf", dimension=8)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        make("mf", epochs=0)


def test_every_model_satisfies_the_protocol(fitted) -> None:
    for model in fitted.values():
        assert isinstance(model, Recommender)


@pytest.mark.parametrize("name", ["pop", *TRAINED])
def test_models_beat_random_on_planted_structure(name, fitted, random_split) -> None:
    base = evaluate_split(fitted["random"], random_split, on="test")
    result = evaluate_split(fitted[name], random_split, on="test")
    assert result.n_users == base.n_users > 100
    assert result.recall > 2 * base.recall and result.recall > base.recall + 0.1, (name, result, base)
    assert result.ndcg > 2 * base.ndcg


def test_trained_models_beat_popularity(fitted, random_split) -> None:
    """The planted taste is per user, so a personalised model must beat the global ranking."""
    pop = evaluate_split(fitted["pop"], random_split, on="test")
    for name in ("mf", "lightgcn", "multvae"):
        assert evaluate_split(fitted[name], random_split, on="test").recall > pop.recall, name


def test_sasrec_learns_next_item_on_leave_one_out(loo_split) -> None:
    model = fit("sasrec", loo_split)
    result = evaluate_split(model, loo_split, on="test", valid_as_history=True)
    chance = evaluate_split(make("random").fit(loo_split.train, 200, 300), loo_split, on="test", valid_as_history=True)
    assert result.recall > 2 * chance.recall and result.recall > chance.recall + 0.1, (result, chance)
    assert model.train_report["best_valid_recall@20"] > 0


@pytest.mark.parametrize("name", list(FAST_CONFIGS))
def test_exclusions_are_honoured(name, fitted, random_split) -> None:
    model = fitted[name]
    n_items = random_split.dataset.n_items
    for user in (0, 7, 42):
        seen = train_items(random_split, user)
        exclude = set(seen) | set(rng(user).choice(n_items, size=100, replace=False).tolist())
        rec = model.recommend(user, 10, exclude, rng(1), history=seen[-3:])
        assert len(rec.item_ids) == 10 == len(set(rec.item_ids))
        assert not set(rec.item_ids) & exclude
        assert all(0 <= i < n_items for i in rec.item_ids)
    everything_but_three = set(range(n_items)) - {5, 6, 7}
    assert sorted(model.recommend(0, 3, everything_but_three, rng()).item_ids) == [5, 6, 7]
    with pytest.raises(ValueError, match="only 3 are not excluded"):
        model.recommend(0, 4, everything_but_three, rng())
    with pytest.raises(ValueError, match="outside 0..299"):
        model.recommend(0, 4, [n_items], rng())


@pytest.mark.parametrize("name", list(FAST_CONFIGS))
def test_save_load_round_trip_gives_identical_scores(name, fitted, tmp_path) -> None:
    model = fitted[name]
    model.save(tmp_path / name)
    loaded = load(tmp_path / name)
    assert type(loaded) is type(model) and loaded.config == model.config
    for user, history in ((3, ()), (11, (1, 2, 3))):
        np.testing.assert_array_equal(loaded.score(user, history), model.score(user, history))
    users = np.arange(20)
    np.testing.assert_array_equal(loaded.score_batch(users), model.score_batch(users))
    if not model.stochastic:
        exclude = set(range(0, 300, 3))
        assert loaded.recommend(5, 8, exclude, rng()) == model.recommend(5, 8, exclude, rng())


def test_load_checks_the_saved_name(fitted, tmp_path) -> None:
    fitted["mf"].save(tmp_path / "m")
    with pytest.raises(ValueError, match="field name is 'mf', expected 'sasrec'"):
        REGISTRY["sasrec"].load(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        load(tmp_path / "nothing")


@pytest.mark.parametrize("name", TRAINED)
def test_seeded_fit_is_reproducible(name, random_split) -> None:
    short = {"epochs": 3, "eval_every": 3}
    a, b = fit(name, random_split, seed=7, **short), fit(name, random_split, seed=7, **short)
    c = fit(name, random_split, seed=8, **short)
    users = np.arange(30)
    np.testing.assert_array_equal(a.score_batch(users), b.score_batch(users))
    assert not np.allclose(a.score_batch(users), c.score_batch(users))


def test_fit_leaves_global_torch_rng_alone(random_split) -> None:
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit("mf", random_split, epochs=1, eval_every=1)
    assert torch.equal(torch.rand(3), expected)


def test_random_propensities_are_uniform_conditionals(fitted) -> None:
    model = fitted["random"]
    exclude = set(range(100))
    rec = model.recommend(0, 5, exclude, rng(3))
    assert rec.propensities == pytest.approx([1 / (200 - j) for j in range(5)])
    assert rec == model.recommend(0, 5, exclude, rng(3))
    assert rec != model.recommend(0, 5, exclude, rng(4))


def test_pop_head_samples_from_the_head_with_true_propensities(random_split) -> None:
    model = fit("pop-head", random_split, head_size=10, weighting="popularity")
    popularity = model.popularity
    exclude = {int(np.argmax(popularity))}
    head = [
        int(i)
        for i in np.argsort(-np.where(np.isin(np.arange(300), list(exclude)), -1, popularity), kind="stable")[:10]
    ]
    generator = rng(5)
    counts = dict.fromkeys(head, 0)
    first_propensity = {}
    n = 4000
    for _ in range(n):
        rec = model.recommend(1, 3, exclude, generator)
        assert set(rec.item_ids) <= set(head)
        counts[rec.item_ids[0]] += 1
        first_propensity[rec.item_ids[0]] = rec.propensities[0]
        assert all(0 < p <= 1 for p in rec.propensities)
    for item, p in first_propensity.items():
        assert counts[item] / n == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / n) + 1e-3), item


def test_observe_feeds_watched_items_to_sequential_models(loo_split) -> None:
    model = fit("sasrec", loo_split, epochs=3, eval_every=3)
    before = model.score(4)
    page = Page(episode=0, page_index=0, item_ids=(10, 11, 12))
    feedback = PageFeedback(
        reactions=(ItemReaction(10, True, 5), ItemReaction(11, False), ItemReaction(12, True, 4)), left=False
    )
    model.observe(4, page, feedback)
    assert model.session_history(4) == [10, 12]
    assert model.session_history(4, history=[12, 13]) == [10, 12, 13]
    np.testing.assert_array_equal(model.score(4, model.session_history(4)), model.score(4, [10, 12]))
    assert not np.allclose(model.score(4, [10, 12]), before)
    model.end_session(4)
    assert model.session_history(4) == []
    with pytest.raises(ValueError, match="item 99 was not on the page"):
        model.observe(4, page, PageFeedback(reactions=(ItemReaction(99, True, 3),), left=False))


def test_bad_training_input_names_row_field_and_value(synthetic) -> None:
    frame = synthetic.interactions.head(50).copy()
    frame.loc[frame.index[7], "item_id"] = 300
    with pytest.raises(ValueError, match=r"train: row 7 field item_id value 300 is outside 0..299"):
        make("pop").fit(frame, 200, 300)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['item_id'\]"):
        make("mf").fit(pd.DataFrame({"user_id": [0]}), 200, 300)
    with pytest.raises(RuntimeError, match="call fit"):
        make("mf").score(0)


def test_lightgcn_propagation_matches_dense_normalised_graph_and_its_gradient() -> None:
    import torch

    from recommenders.base import UserItems
    from recommenders.lightgcn import SymmetricPropagation, normalized_adjacency

    frame = pd.DataFrame({"user_id": [0, 0, 1, 2], "item_id": [0, 1, 1, 2], "timestamp": 0})
    graph = normalized_adjacency(UserItems.from_frame(frame, 3), 3)
    adjacency = np.zeros((6, 6))
    for u, i in zip(frame.user_id, frame.item_id, strict=True):
        adjacency[u, 3 + i] = adjacency[3 + i, u] = 1
    degree = adjacency.sum(1)
    expected = adjacency / np.sqrt(np.outer(degree, degree))
    np.testing.assert_allclose(graph.to_dense().numpy(), expected, rtol=1e-6)
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    weights = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (SymmetricPropagation.apply(graph.to(torch.float64), x) * weights).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), expected.T @ weights.numpy(), rtol=1e-6)
