"""Build Agent4Rec-style personas from the TRAIN split only: traits, taste, history, demographics.

Traits (Agent4Rec's definitions; docs/CONTRACTS.md), computed over every user present in `split.train`:
- activity   = number of train ratings; cut at the 60th and 90th percentiles;
- conformity = mean over the user's train ratings of (rating - item mean)^2, item means from train only;
               cut at the 25th and 80th percentiles (1 = follows the crowd, 3 = maverick);
- diversity  = fewest genres whose counts cover 80% of the user's genre counts; cut at the 33rd and 66th.
Percentiles use numpy's default (linear interpolation). A value EQUAL to a cut point goes to the UPPER
group: group = 1 + (value >= low cut) + (value >= high cut). Diversity takes few distinct integer values
(mostly 6-8 genres on MovieLens), so the tie rule decides group sizes: on ML-1M (all users, all ratings)
"ties up" gives 1948/1795/2297 users in diversity groups 1/2/3, "ties down" 3743/1529/768. Ties up stays
near thirds and has the shape of Agent4Rec's published sizes (largest diversity group 3, activity group 1
below 60%); for activity and conformity the rule moves a handful of users.

Taste: liked = rated >= 4, disliked = rated <= 2. Genres are ranked by how many liked (disliked) ratings
they appear in (ties by name); a genre already listed as liked is not listed as disliked. Titles are
ranked by rating (highest first for liked, lowest first for disliked), then by recency.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import jinja2
import numpy as np
import pandas as pd

from simenv.data.dataset import Dataset, Split
from simenv.llm.templates import load_template
from simenv.records import Persona

TRAITS = ("activity", "conformity", "diversity")
PERCENTILES: dict[str, tuple[float, float]] = {"activity": (60, 90), "conformity": (25, 80), "diversity": (33, 66)}
DIVERSITY_COVERAGE = 0.8
LIKED_MIN = 4.0
DISLIKED_MAX = 2.0
TASTE_TEMPLATE = ("agents", "taste_text", 1)
# Users-table columns shown as demographics, in this order; age is skipped when an age group is present.
DEMOGRAPHIC_COLUMNS = ("age_group", "age", "gender", "occupation")
_GENDER = {"M": "male", "F": "female"}


@dataclass(frozen=True)
class TraitTable:
    """Raw trait values and groups for every user in a training split, plus the cut points used."""

    values: pd.DataFrame  # index user_id; columns activity, conformity, diversity (float)
    groups: pd.DataFrame  # index user_id; columns activity, conformity, diversity (int 1..3)
    cuts: dict[str, tuple[float, float]]


def trait_values(train: pd.DataFrame, genre_matrix: np.ndarray) -> pd.DataFrame:
    """Activity, conformity and diversity for every user with at least one rating in `train`."""
    users, user_index = np.unique(train["user_id"].to_numpy(), return_inverse=True)
    items = train["item_id"].to_numpy()
    ratings = train["rating"].to_numpy(dtype=np.float64)
    activity = np.bincount(user_index, minlength=users.size).astype(np.float64)

    n_items = genre_matrix.shape[0]
    item_sum = np.bincount(items, weights=ratings, minlength=n_items)
    item_count = np.bincount(items, minlength=n_items)
    item_mean = item_sum / np.maximum(item_count, 1)
    squared = (ratings - item_mean[items]) ** 2
    conformity = np.bincount(user_index, weights=squared, minlength=users.size) / activity

    counts = user_genre_counts(user_index, items, genre_matrix, users.size)
    diversity = genres_covering(counts, DIVERSITY_COVERAGE).astype(np.float64)
    return pd.DataFrame(
        {"activity": activity, "conformity": conformity, "diversity": diversity},
        index=pd.Index(users, name="user_id"),
    )


def user_genre_counts(user_index: np.ndarray, items: np.ndarray, genre_matrix: np.ndarray, n_users: int) -> np.ndarray:
    """(n_users, n_genres) counts: for each rating, +1 for every genre of the rated item.

    Each rating is expanded into one (user, genre) pair per genre of its item (CSR-style), then counted
    with a single bincount - no per-user or per-genre loop.
    """
    n_items, n_genres = genre_matrix.shape
    item_rows, genre_cols = np.nonzero(genre_matrix)  # row-major: grouped by item
    per_item = np.bincount(item_rows, minlength=n_items)
    first = np.r_[0, np.cumsum(per_item)[:-1]]
    k = per_item[items]
    starts = np.repeat(first[items] - (np.cumsum(k) - k), k)
    genres = genre_cols[starts + np.arange(int(k.sum()))]
    pairs = np.repeat(user_index, k) * n_genres + genres
    return np.bincount(pairs, minlength=n_users * n_genres).reshape(n_users, n_genres)


def genres_covering(counts: np.ndarray, coverage: float) -> np.ndarray:
    """Per row, the fewest genres (largest counts first) whose counts sum to >= `coverage` of the row total.

    Rows with no genre counts at all get 0.
    """
    ordered = -np.sort(-counts, axis=1)
    cumulative = np.cumsum(ordered, axis=1)
    total = cumulative[:, -1:] if counts.shape[1] else np.zeros((counts.shape[0], 1))
    # Counts are integers; the tolerance only absorbs float rounding of coverage * total.
    reached = cumulative >= coverage * total - 1e-9
    needed = np.argmax(reached, axis=1) + 1
    return np.where(total[:, 0] > 0, needed, 0)


def trait_cuts(values: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """The two cut points of each trait: its percentiles (PERCENTILES) over all users in `values`."""
    return {t: tuple(float(c) for c in np.percentile(values[t].to_numpy(), PERCENTILES[t])) for t in TRAITS}


def trait_groups(values: pd.DataFrame, cuts: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Group 1..3 per trait; a value equal to a cut point goes to the upper group (see module docstring)."""
    groups = {}
    for t in TRAITS:
        low, high = cuts[t]
        groups[t] = 1 + (values[t] >= low).astype(np.int64) + (values[t] >= high).astype(np.int64)
    return pd.DataFrame(groups, index=values.index)


def compute_traits(split: Split) -> TraitTable:
    """Trait values, cut points and groups over every user of `split.train`."""
    values = trait_values(split.train, split.dataset.genre_matrix)
    cuts = trait_cuts(values)
    return TraitTable(values=values, groups=trait_groups(values, cuts), cuts=cuts)


def _sorted_by_user_time(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` ordered by (user, timestamp, item); splits already are, so usually no sort happens."""
    user, stamp, item = (frame[c].to_numpy() for c in ("user_id", "timestamp", "item_id"))
    same_user = user[1:] == user[:-1]
    same_time = same_user & (stamp[1:] == stamp[:-1])
    ordered = (user[1:] >= user[:-1]) & (~same_user | (stamp[1:] >= stamp[:-1])) & (~same_time | (item[1:] > item[:-1]))
    if ordered.all():
        return frame.reset_index(drop=True)
    return frame.iloc[np.lexsort((item, stamp, user))].reset_index(drop=True)


def _boundaries(sorted_users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique users, start offsets incl. the end) of a user-sorted id array."""
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]]) if sorted_users.size else np.array([])
    return sorted_users[starts.astype(np.int64)], np.r_[starts, sorted_users.size].astype(np.int64)


def _top_genres(
    rows: pd.DataFrame, genre_matrix: np.ndarray, vocabulary: tuple[str, ...], k: int
) -> dict[int, list[str]]:
    """For each user in `rows`, up to k genres by count in those rows (ties by name, zero counts dropped)."""
    users, user_index = np.unique(rows["user_id"].to_numpy(), return_inverse=True)
    counts = user_genre_counts(user_index, rows["item_id"].to_numpy(), genre_matrix, users.size)
    order = np.argsort(-counts, axis=1, kind="stable")[:, :k]  # vocabulary is sorted: stable = ties by name
    top = np.take_along_axis(counts, order, axis=1)
    return {
        int(u): [vocabulary[g] for g, c in zip(o, t, strict=True) if c > 0]
        for u, o, t in zip(users, order, top, strict=True)
    }


def _top_titles(rows: pd.DataFrame, labels: np.ndarray, k: int, highest_first: bool) -> dict[int, list[str]]:
    """For each user, up to k item labels ordered by rating (then most recent first)."""
    rating = rows["rating"].to_numpy()
    order = np.lexsort(
        (
            rows["item_id"].to_numpy(),
            -rows["timestamp"].to_numpy(),
            -rating if highest_first else rating,
            rows["user_id"].to_numpy(),
        )
    )
    users_sorted = rows["user_id"].to_numpy()[order]
    items_sorted = rows["item_id"].to_numpy()[order]
    users, bounds = _boundaries(users_sorted)
    ends = np.minimum(bounds[:-1] + k, bounds[1:])
    return {int(u): labels[items_sorted[bounds[i] : ends[i]]].tolist() for i, u in enumerate(users)}


def _demographics(users: pd.DataFrame) -> dict[int, tuple[tuple[str, str], ...]]:
    columns = [c for c in DEMOGRAPHIC_COLUMNS if c in users.columns]
    if "age_group" in columns and "age" in columns:
        columns.remove("age")
    out: dict[int, tuple[tuple[str, str], ...]] = {}
    frame = users[["user_id", *columns]]
    for row in frame.itertuples(index=False):
        pairs = []
        for column, value in zip(columns, row[1:], strict=True):
            if pd.isna(value) or str(value) == "":
                continue
            text = _GENDER.get(str(value), str(value)) if column == "gender" else str(value)
            pairs.append(("age" if column == "age_group" else column, text))
        out[int(row[0])] = tuple(pairs)
    return out


@cache
def _taste_template() -> jinja2.Template:
    """The taste template, compiled once with the same settings as simenv.llm.templates (StrictUndefined).

    Rendering 6,040 personas must not recompile it each time (~1 ms per compile); the committed
    PromptTemplate.render compiles on every call.
    """
    template = load_template(*TASTE_TEMPLATE)
    return jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False).from_string(template.source)


def render_taste(
    liked_genres: list[str], disliked_genres: list[str], liked_titles: list[str], disliked_titles: list[str]
) -> str:
    """The short natural-language taste text from agents/prompts/taste_text.v1.j2, as one paragraph."""
    text = _taste_template().render(
        liked_genres=liked_genres,
        disliked_genres=disliked_genres,
        liked_titles=liked_titles,
        disliked_titles=disliked_titles,
    )
    return " ".join(text.split())


def build_personas(
    split: Split,
    users: np.ndarray | list[int] | None = None,
    n_genres: int = 3,
    n_titles: int = 5,
    traits: TraitTable | None = None,
) -> dict[int, Persona]:
    """Personas for `users` (default: `split.users`), with traits computed over all of `split.train`.

    Every requested user must have at least one train rating. Pass `traits` to reuse a `compute_traits`.
    """
    dataset = split.dataset
    train = _sorted_by_user_time(split.train)
    table = traits if traits is not None else compute_traits(split)
    wanted = np.unique(np.asarray(split.users if users is None else users, dtype=np.int64))
    missing = np.setdiff1d(wanted, table.values.index.to_numpy())
    if missing.size:
        raise ValueError(f"users without train ratings cannot get a persona: {missing[:10].tolist()}")
    train = train[np.isin(train["user_id"].to_numpy(), wanted)]

    liked_genres, disliked_all, liked_titles, disliked_titles = _likes_and_dislikes(dataset, train, n_genres, n_titles)
    demographics = _demographics(dataset.users)

    user_sorted = train["user_id"].to_numpy()
    item_values = train["item_id"].to_numpy().tolist()
    rating_values = train["rating"].to_numpy().astype(np.float64).tolist()
    present, bounds = _boundaries(user_sorted)
    values = {t: table.values[t].reindex(present).to_numpy(dtype=np.float64).tolist() for t in TRAITS}
    groups = {t: table.groups[t].reindex(present).to_numpy(dtype=np.int64).tolist() for t in TRAITS}
    bounds_list = bounds.tolist()
    personas: dict[int, Persona] = {}
    for i, user in enumerate(present.tolist()):
        lo, hi = bounds_list[i], bounds_list[i + 1]
        likes = liked_genres.get(user, [])
        dislikes = [g for g in disliked_all.get(user, []) if g not in likes][:n_genres]
        loved = liked_titles.get(user, [])
        hated = disliked_titles.get(user, [])
        personas[user] = Persona(
            user_id=user,
            activity=groups["activity"][i],
            conformity=groups["conformity"][i],
            diversity=groups["diversity"][i],
            activity_value=values["activity"][i],
            conformity_value=values["conformity"][i],
            diversity_value=values["diversity"][i],
            liked_genres=tuple(likes),
            disliked_genres=tuple(dislikes),
            liked_titles=tuple(loved),
            disliked_titles=tuple(hated),
            taste_text=render_taste(likes, dislikes, loved, hated),
            train_items=tuple(item_values[lo:hi]),
            train_ratings=tuple(rating_values[lo:hi]),
            demographics=demographics.get(user, ()),
        )
    return personas


def _likes_and_dislikes(
    dataset: Dataset, train: pd.DataFrame, n_genres: int, n_titles: int
) -> tuple[dict[int, list[str]], dict[int, list[str]], dict[int, list[str]], dict[int, list[str]]]:
    """Per user: the top liked genres, every disliked genre by count (liked ones are removed by the caller), the
    top liked and disliked titles ("Title (year)"), from the ratings >= LIKED_MIN and <= DISLIKED_MAX."""
    genre_matrix = dataset.genre_matrix
    vocabulary = dataset.genre_vocabulary
    items = dataset.items
    labels = np.array(
        [t if pd.isna(y) else f"{t} ({int(y)})" for t, y in zip(items["title"], items["year"], strict=True)],
        dtype=object,
    )
    ratings = train["rating"].to_numpy()
    liked_rows = train[ratings >= LIKED_MIN]
    disliked_rows = train[ratings <= DISLIKED_MAX]
    return (
        _top_genres(liked_rows, genre_matrix, vocabulary, n_genres),
        _top_genres(disliked_rows, genre_matrix, vocabulary, len(vocabulary)),
        _top_titles(liked_rows, labels, n_titles, highest_first=True),
        _top_titles(disliked_rows, labels, n_titles, highest_first=False),
    )


def trait_group_sizes(personas: dict[int, Persona] | list[Persona]) -> dict[str, tuple[int, int, int]]:
    """How many personas fall in groups 1, 2 and 3 of each trait."""
    people = list(personas.values()) if isinstance(personas, dict) else list(personas)
    out = {}
    for trait in TRAITS:
        groups = np.array([getattr(p, trait) for p in people], dtype=np.int64)
        counts = np.bincount(groups, minlength=4)
        out[trait] = (int(counts[1]), int(counts[2]), int(counts[3]))
    return out
