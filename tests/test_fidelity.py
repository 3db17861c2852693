"""Fidelity harness on a tiny dataset with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from agents.config import load_user
from agents.embedding import HashingEmbedder
from agents.fidelity import Discrimination, SessionJudge, discrimination, kl_divergence, rating_fidelity
from simenv.llm.mock import MockLLM
from tests.fixtures_agents import tiny_world


class OracleJudge:
    """Knows the held-out truth: watches exactly the user's test items; rates them with a fixed offset."""

    def __init__(self, split, offset: float = 0.0, watch: str = "truth") -> None:
        test = split.test
        rows = zip(test.user_id, test.item_id, test.rating, strict=True)
        self.truth = {(int(u), int(i)): float(r) for u, i, r in rows}
        self.offset = offset
        self.mode = watch
        self.asked = []

    def judge_many(self, asks, rng):
        out = []
        for persona, ids in asks:
            self.asked.append((persona.user_id, list(ids)))
            known = np.array([(persona.user_id, i) in self.truth for i in ids])
            watch = {"truth": known, "none": np.zeros(len(ids), bool), "all": np.ones(len(ids), bool)}[self.mode]
            stars = np.array(
                [np.clip(self.truth.get((persona.user_id, i), 3.0) + self.offset, 1, 5) for i in ids], dtype=np.int64
            )
            out.append((watch, stars))
        return out


def test_oracle_scores_perfectly_and_pages_are_well_formed():
    ds, split, personas = tiny_world()
    ps = list(personas.values())
    judge = OracleJudge(split)
    result = discrimination(judge, split, ps, np.random.default_rng(0), ratios=(1, 3), n_pos=4, page_size=6)
    for m, d in result.items():
        assert (d.accuracy, d.precision, d.recall, d.f1) == (1.0, 1.0, 1.0, 1.0)
        assert d.tp == 4 * d.n_personas and d.tn == m * 4 * d.n_personas
    rated = {(int(u), int(i)) for u, i in zip(ds.interactions.user_id, ds.interactions.item_id, strict=True)}
    for user, ids in judge.asked:
        assert len(ids) <= 6 and len(set(ids)) == len(ids)
        negatives = [i for i in ids if (user, i) not in judge.truth]
        assert all((user, i) not in rated for i in negatives)  # never rated in any split


def test_degenerate_judges_give_known_scores_and_no_nan():
    _, split, personas = tiny_world()
    ps = list(personas.values())
    none = discrimination(OracleJudge(split, watch="none"), split, ps, np.random.default_rng(1), ratios=(1, 9))
    for m, d in none.items():
        assert d.precision == 0.0 and d.recall == 0.0 and d.f1 == 0.0
        assert d.accuracy == pytest.approx(m / (m + 1))
    everything = discrimination(OracleJudge(split, watch="all"), split, ps, np.random.default_rng(1), ratios=(1, 9))
    for m, d in everything.items():
        assert d.recall == 1.0 and d.precision == pytest.approx(1 / (m + 1))
        assert d.f1 == pytest.approx(2 / (m + 2))
    assert Discrimination(1, 0, 0, 0, 0, 0).as_dict()["f1"] == 0.0


def test_rating_fidelity_known_answers():
    _, split, personas = tiny_world()
    ps = list(personas.values())
    exact = rating_fidelity(OracleJudge(split), split, ps, np.random.default_rng(2), n_per_persona=5)
    assert exact.rmse == 0.0 and exact.kl == pytest.approx(0.0) and exact.n > 0
    shifted = rating_fidelity(OracleJudge(split, offset=-1.0), split, ps, np.random.default_rng(2), n_per_persona=5)
    real = np.array([r * s for r, s in zip(shifted.real_hist, [1, 2, 3, 4, 5], strict=True)])
    # every rating drops one star except 1s: squared error 1 for the rest
    assert shifted.rmse == pytest.approx(np.sqrt(1.0 - shifted.real_hist[0]))
    assert shifted.kl > 0.1 and real.sum() > 0


def test_kl_divergence_by_hand():
    real = np.array([1, 2, 2, 3])
    sim = np.array([2, 2, 3, 3])
    p = (np.array([1, 2, 1, 0, 0]) + 0.5) / 6.5
    q = (np.array([0, 2, 2, 0, 0]) + 0.5) / 6.5
    assert kl_divergence(real, sim) == pytest.approx(float(np.sum(p * np.log(p / q))))
    assert kl_divergence(real, real) == 0.0


def test_real_user_models_beat_chance_on_planted_taste():
    from agents.config import DecisionConfig
    from agents.decision import GroundedDecider
    from agents.silent_user import SilentUserModel

    ds, split, personas = tiny_world()
    ps = list(personas.values())
    cfg = DecisionConfig(name="t", w_genre=3.0, w_popularity=1.0, watch_rate=(0.3, 0.3, 0.3), decide="threshold")
    grounded = discrimination(GroundedDecider(ds, split.train, cfg), split, ps, np.random.default_rng(3), ratios=(1,))
    assert grounded[1].accuracy > 0.6
    fast = SilentUserModel(GroundedDecider(ds, split.train, load_user("handset").decision, embedder=HashingEmbedder()))
    via_sessions = discrimination(SessionJudge(fast), split, ps, np.random.default_rng(3), ratios=(1,))
    assert via_sessions[1].tp + via_sessions[1].fp > 0
    ratings = rating_fidelity(SessionJudge(fast), split, ps, np.random.default_rng(3))
    assert 0 < ratings.n and np.isfinite(ratings.rmse)


class ProbabilityJudge(OracleJudge):
    """An oracle that also exposes a watch probability: `quality` of the positives score above the negatives."""

    def __init__(self, split, invert: bool = False) -> None:
        super().__init__(split, watch="none")
        self.invert = invert

    def watch_probability(self, persona, item_ids):
        known = np.array([(persona.user_id, int(i)) in self.truth for i in item_ids], dtype=np.float64)
        return 1.0 - known if self.invert else 0.1 + 0.8 * known


def test_auc_is_level_free_and_nan_without_a_probability():
    _, split, personas = tiny_world()
    ps = list(personas.values())
    # decisions say "watch nothing" (accuracy m/(m+1)), yet the probability ranks every positive first: AUC 1
    ranked = discrimination(ProbabilityJudge(split), split, ps, np.random.default_rng(3), ratios=(1, 9))
    inverted = discrimination(ProbabilityJudge(split, invert=True), split, ps, np.random.default_rng(3), ratios=(1,))
    plain = discrimination(OracleJudge(split), split, ps, np.random.default_rng(3), ratios=(1,))
    assert all(d.auc == 1.0 and d.recall == 0.0 for d in ranked.values())
    assert inverted[1].auc == 0.0
    assert np.isnan(plain[1].auc) and np.isnan(plain[1].as_dict()["auc"])


def test_protocol_top_k_picks_exactly_k_and_is_nan_without_a_ranking():
    """The protocol as peers run it: told k, the user picks k. An oracle probability scores 1.0 on it although
    its own decisions (watch nothing) score m/(m+1); a subject with neither a picker nor a probability has none."""
    _, split, personas = tiny_world()
    ps = list(personas.values())
    ranked = discrimination(ProbabilityJudge(split), split, ps, np.random.default_rng(3), ratios=(1, 9))
    for m, d in ranked.items():
        assert d.protocol is not None and d.protocol.accuracy == 1.0 and d.protocol.f1 == 1.0
        assert d.protocol.tp + d.protocol.fp == d.protocol.tp + d.protocol.fn  # picked exactly the positives' count
        assert d.accuracy == pytest.approx(m / (m + 1))
    plain = discrimination(OracleJudge(split), split, ps, np.random.default_rng(3), ratios=(1,))
    assert plain[1].protocol is None and np.isnan(plain[1].as_dict()["protocol_accuracy"])


class MiscountingJudge(ProbabilityJudge):
    def pick_many(self, asks, ks, rng):
        return [np.ones(len(ids), bool) for _, ids in asks]


def test_protocol_rejects_a_pick_of_the_wrong_size():
    _, split, personas = tiny_world()
    with pytest.raises(ValueError, match="picked where the user was told"):
        discrimination(MiscountingJudge(split), split, list(personas.values()), np.random.default_rng(3), ratios=(1,))


def test_grounded_and_llm_users_pick_exactly_k():
    """The fitted-style decider picks the top k by its watch probability; an LLM-only user asks page_pick ("you
    watched k of these") and keeps the LLM's k picks."""
    from agents.decision import GroundedDecider
    from agents.llm_user import LLMUserModel

    ds, split, personas = tiny_world()
    ps = list(personas.values())[:12]
    rng = np.random.default_rng(4)
    asks = [(p, rng.choice(ds.n_items, size=8, replace=False).tolist()) for p in ps]
    ks = [int(k) for k in rng.integers(0, 9, size=len(asks))]
    decider = GroundedDecider(ds, split.train, load_user("handset").decision, embedder=HashingEmbedder())
    for (persona, ids), k, pick in zip(asks, ks, decider.pick_many(asks, ks, rng), strict=True):
        assert pick.sum() == k
        prob = decider.watch_probability(persona, ids)
        assert prob[pick].min(initial=1.0) >= prob[~pick].max(initial=0.0)

    class Recording(MockLLM):
        templates: list[str] = []

        def complete_batch(self, requests):
            self.templates.extend(r.template for r in requests)
            return super().complete_batch(requests)

    llm = Recording(seed=1)
    model = LLMUserModel(ds, llm, HashingEmbedder(64), load_user("llm-only").user, train=split.train)
    picks = model.pick_many(asks, ks, np.random.default_rng(5))
    assert [int(p.sum()) for p in picks] == ks
    assert set(llm.templates) == {"page_pick"} and len(llm.templates) == sum(0 < k < 8 for k in ks)


class ExpectingJudge(OracleJudge):
    """Stars one below the truth, but an expected rating equal to it: RMSE is of the expectation."""

    def __init__(self, split) -> None:
        super().__init__(split, offset=-1.0)

    def expected_rating(self, persona, item_ids):
        return np.array([self.truth.get((persona.user_id, int(i)), 3.0) for i in item_ids])


def test_rating_rmse_is_of_the_expected_rating_when_exposed():
    _, split, personas = tiny_world()
    result = rating_fidelity(ExpectingJudge(split), split, list(personas.values()), np.random.default_rng(2))
    assert result.rmse == 0.0 and result.rmse_stars > 0.5
