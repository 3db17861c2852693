"""Personas: traits by hand on a toy split, cut points and tie rule, taste, no leakage, real ML-100K / ML-1M."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from agents.persona import (
    build_personas,
    compute_traits,
    render_taste,
    trait_cuts,
    trait_group_sizes,
    trait_groups,
)
from simenv.data import Dataset, Split, agent4rec_split
from tests.fixtures_data import (  # noqa: F401  (the *_fixture names register pytest fixtures)
    data_cache_dir_fixture,
    ml1m_fixture,
    ml100k_fixture,
    toy_dataset,
)

GENRES = [("Action",), ("Action", "Comedy"), ("Drama",), ("Comedy", "Drama")]
TRAIN = [
    (0, 0, 5.0, 1),
    (0, 1, 4.0, 2),
    (0, 2, 1.0, 3),
    (1, 0, 3.0, 4),
    (1, 2, 5.0, 5),
    (2, 1, 2.0, 6),
    (2, 3, 4.0, 7),
    (2, 0, 4.0, 8),
]
HELD_OUT = [(1, 1, 5.0, 9), (1, 3, 1.0, 10)]


def _toy_split(held_out: list[tuple[int, int, float, int]] = HELD_OUT) -> Split:
    users = pd.DataFrame(
        {"user_id": [0, 1, 2], "age": [24, 53, 23], "gender": ["M", "F", "M"], "occupation": ["a", "b", "c"]}
    )
    ds = toy_dataset(TRAIN + held_out, GENRES, users)
    inter = ds.interactions
    is_train = inter["timestamp"] <= 8
    empty = inter.iloc[:0]
    return Split(ds, inter[is_train].reset_index(drop=True), empty, inter[~is_train], np.arange(3), "toy")


def test_trait_values_by_hand() -> None:
    values = compute_traits(_toy_split()).values
    # item means from train only: item0 (5+3+4)/3 = 4, item1 (4+2)/2 = 3, item2 (1+5)/2 = 3, item3 4
    assert values["activity"].tolist() == [3.0, 2.0, 3.0]
    np.testing.assert_allclose(values["conformity"], [(1 + 1 + 4) / 3, (1 + 4) / 2, (1 + 0 + 0) / 3])
    # genre counts: u0 Action 2, Comedy 1, Drama 1 -> 3 genres to reach 80% of 4;
    # u1 Action 1, Drama 1 -> 2 of 2; u2 Action 2, Comedy 2, Drama 1 -> 2 genres reach exactly 80% of 5
    assert values["diversity"].tolist() == [3.0, 2.0, 2.0]


def test_cut_points_and_ties_go_up() -> None:
    values = pd.DataFrame(
        {
            "activity": np.arange(1, 11, dtype=float),  # 60th pct = 1 + 0.6 * 9 = 6.4, 90th = 9.1
            "conformity": np.linspace(0.0, 0.9, 10),  # 25th pct = 0.225, 80th = 0.72
            "diversity": [1, 2, 2, 2, 3, 3, 3, 4, 4, 4.0],  # 33rd pct = 2.0 (pos 2.97), 66th = 3.0 (pos 5.94)
        }
    )
    cuts = trait_cuts(values)
    np.testing.assert_allclose(cuts["activity"], (6.4, 9.1))
    np.testing.assert_allclose(cuts["conformity"], (0.225, 0.72))
    np.testing.assert_allclose(cuts["diversity"], (2.0, 3.0))
    groups = trait_groups(values, cuts)
    assert groups["activity"].tolist() == [1] * 6 + [2] * 3 + [3]
    assert groups["conformity"].tolist() == [1] * 3 + [2] * 5 + [3] * 2
    # values equal to a cut point go to the upper group: 2 -> group 2, 3 -> group 3
    assert groups["diversity"].tolist() == [1, 2, 2, 2, 3, 3, 3, 3, 3, 3]


def test_toy_personas_taste_history_and_demographics() -> None:
    personas = build_personas(_toy_split())
    assert list(personas) == [0, 1, 2]
    p = personas[0]
    assert (p.liked_genres, p.disliked_genres) == (("Action", "Comedy"), ("Drama",))
    assert p.liked_titles == ("Film 0 (2000)", "Film 1 (2001)") and p.disliked_titles == ("Film 2 (2002)",)
    assert p.train_items == (0, 1, 2) and p.train_ratings == (5.0, 4.0, 1.0)
    assert p.demographics == (("age", "24"), ("gender", "male"), ("occupation", "a"))
    assert p.taste_text == (
        "You enjoy Action and Comedy movies, such as Film 0 (2000) and Film 1 (2001). "
        "You tend to dislike Drama movies, such as Film 2 (2002)."
    )
    assert (p.activity_value, p.diversity_value) == (3.0, 3.0)
    # user 2's liked genres tie (Action 1, Comedy 1, Drama 1 among items rated >= 4): ties by name
    assert personas[2].liked_genres == ("Action", "Comedy", "Drama")
    assert personas[2].disliked_genres == ()  # Action and Comedy (item 1, rated 2) are already liked


def test_held_out_ratings_never_reach_personas() -> None:
    base = build_personas(_toy_split())
    changed = build_personas(_toy_split([(1, 1, 1.0, 9), (1, 3, 5.0, 10), (0, 3, 1.0, 11)]))
    assert base == changed


def test_taste_text_template_edge_cases() -> None:
    assert render_taste([], [], [], []) == "You have not loved any movie yet. You rarely dislike a movie."
    assert render_taste(["Drama"], [], ["A (1990)"], []) == (
        "You enjoy Drama movies, such as A (1990). You rarely dislike a movie."
    )
    assert render_taste([], [], ["A", "B", "C", "D"], ["E"]) == "You enjoyed A, B and C. You disliked E."


def test_unknown_users_are_rejected() -> None:
    with pytest.raises(ValueError, match="without train ratings"):
        build_personas(_toy_split(), users=[0, 7])


def test_ml100k_personas(ml100k: Dataset) -> None:
    split = agent4rec_split(ml100k, n_users=None, seed=0)
    personas = build_personas(split)
    assert list(personas) == split.users.tolist()
    sizes = trait_group_sizes(personas)
    n = len(personas)
    assert all(sum(s) == n for s in sizes.values())
    # Continuous conformity: group shares follow the 25th / 80th percentiles closely.
    assert abs(sizes["conformity"][0] / n - 0.25) < 0.01 and abs(sizes["conformity"][2] / n - 0.20) < 0.01
    train = split.train
    labels = {i.item_id: f"{i.title} ({i.year})" if i.year else i.title for i in ml100k.catalog}
    for user in split.users[:50].tolist():
        p = personas[user]
        rows = train[train["user_id"] == user]
        assert p.train_items == tuple(rows["item_id"].tolist())
        assert p.activity_value == len(rows)
        liked = rows[rows["rating"] >= 4]
        assert set(p.liked_titles) <= {labels[i] for i in liked["item_id"]}
        assert (
            labels[int(liked.sort_values(["rating", "timestamp"], ascending=False)["item_id"].iloc[0])]
            == (p.liked_titles[0])
        )
        assert not set(p.liked_genres) & set(p.disliked_genres)
        assert p.liked_genres[0] in p.taste_text
        assert dict(p.demographics).keys() == {"age", "gender", "occupation"}


def test_ml1m_agent4rec_personas(ml1m: Dataset) -> None:
    split = agent4rec_split(ml1m, n_users=1000, seed=0)
    personas = build_personas(split)
    assert len(personas) == 1000
    p = next(iter(personas.values()))
    assert dict(p.demographics)["age"] in {"under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.taste_text = "changed"  # type: ignore[misc]
    sizes = trait_group_sizes(personas)
    assert all(sum(s) == 1000 for s in sizes.values())
    assert abs(sizes["activity"][2] - 100) <= 10  # 90th percentile of distinct-ish counts
