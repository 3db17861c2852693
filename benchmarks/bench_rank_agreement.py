"""How well can a policy reading the observation rank candidates as the simulator does? (issue 24 §2)

    .venv/bin/python -m benchmarks.bench_rank_agreement [--dataset ml-100k] [--seed 0] [--users 400] [--members 0,1,2]

For each of `--users` split users: the env's candidate set (base MF's top 30 unseen + 10 random), the fitted
response model's watch probability of each candidate (member 0, the validated user), and two observations of the
candidates: the *old* one (genre vector, log popularity, mean train rating, base rank from the row index) and the
*new* `candidate_features` (base score and rank, item-kNN, EASE, SVD, genre lift, popularity, mean rating,
activity). A per-candidate scorer (ridge regression, a small gradient-boosted tree model, and a 32-32 ReLU MLP, the
shape of the ranking policy's row network) is fitted on half the users to the response model's watch logit and
scored on the other half: mean per-user Spearman correlation between its scores and the watch probability over the
candidate set. Goal (issue 24): >= 0.95 with the new observation.

Two reference rows say where the ceiling is: `response_features_*` fits the same scorers on the response model's
own train-only feature columns (`agents.features.PairFeatures`) at the candidates, and `twin_fold_models` is the
agreement of the persona's cross-fitted watch model with the model fitted on the other fold (same candidates):
how far the simulator's order is reproducible from the data at all.

`--members` (default `[rl] members`, 0,1,2) adds the target a policy trained by `simrec train-rl` actually
optimises: the env draws one response member per episode, so the expected watch probability of a candidate is the
mean over the members. `new_*_vs_members_mean` are the same scorers fitted to the logit of that mean, and
`twin_members` the agreement of member 0 with each other member (the spread the mean averages out).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.special import logit
from scipy.stats import spearmanr
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from agents.response import ResponseModel
from experiments.build import train_recommender
from experiments.config import DEFAULTS
from experiments.rl.features import candidate_featurizer
from simenv.candidates import candidate_set
from simenv.records import Persona
from simenv.spaces import ItemFeatures
from simrec.envs import _world_and_users, env_config


def collect(dataset: str, seed: int, n_users: int, members: tuple[int, ...]) -> dict[str, np.ndarray]:
    config = env_config(dataset, seed)
    world, factory = _world_and_users(config)
    base = train_recommender(config, world, "mf")[0]
    featurizer = candidate_featurizer(config, world, base)
    decider = factory.decider(factory.spec("fitted"))
    item_features = ItemFeatures.from_train(world.dataset, world.split.train)
    rng = np.random.default_rng([seed, 24, 1])
    users = rng.permutation(sorted(world.population))[:n_users]
    response = decider.response  # the fitted watch model's own train-only features: the scorer's ceiling
    others = [factory.decider(factory.spec("fitted"), member=m) for m in members if m != 0]
    old, new, own, target, group, twin = [], [], [], [], [], []
    mean_target, twin_members = [], []
    for g, u in enumerate(users.tolist()):
        persona = world.population[u]
        ids = candidate_set(persona, 40, 10, rng, item_features, base)
        rank = np.arange(len(ids), dtype=np.float32)[:, None] / (len(ids) - 1)
        old.append(np.hstack([item_features.table[ids], rank]))
        new.append(featurizer.features(persona, ids))
        if response is not None:
            own.append(response.features.matrix(persona)[ids])
            twin.append(_twin_agreement(response, persona, own[-1]))
        p, *rest = [np.clip(d.watch_probability(persona, ids), 1e-6, 1 - 1e-6) for d in (decider, *others)]
        target.append(logit(p))
        if rest:
            mean_target.append(logit(np.mean([p, *rest], axis=0)))
            twin_members.append(np.mean([spearmanr(p, q)[0] for q in rest]))
        group.append(np.full(len(ids), g))
    return {
        "old": np.concatenate(old),
        "new": np.concatenate(new),
        **({"response_features": np.concatenate(own)} if own else {}),
        "target": np.concatenate(target),
        **({"members_mean": np.concatenate(mean_target)} if mean_target else {}),
        "group": np.concatenate(group),
        "twin": np.asarray(twin, dtype=np.float64),
        "twin_members": np.asarray(twin_members, dtype=np.float64),
    }


def _twin_agreement(response: ResponseModel, persona: Persona, x: np.ndarray) -> float:
    """Spearman between the persona's own cross-fitted watch model and the other folds' models on its candidates."""
    probs = [model.watch.predict_proba(x)[:, 1] for model in response.models]
    own = response.fold_of(persona)
    others = [spearmanr(probs[own], probs[k])[0] for k in range(len(probs)) if k != own]
    return float(np.mean(others)) if others else float("nan")


def agreement(x: np.ndarray, y: np.ndarray, group: np.ndarray, model: object) -> float:
    """Mean per-user Spearman of `model` (fitted on the first half of the users) on the second half."""
    half = group < group.max() / 2
    model.fit(x[half], y[half])  # type: ignore[attr-defined]
    pred = model.predict(x[~half])  # type: ignore[attr-defined]
    rhos = [spearmanr(pred[group[~half] == g], y[~half][group[~half] == g])[0] for g in np.unique(group[~half])]
    return float(np.nanmean(rhos))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--members", default=",".join(map(str, DEFAULTS.rl.members)), help="e.g. 0,1,2; 0 = none")
    args = parser.parse_args()
    members = tuple(int(m) for m in args.members.split(","))
    start = time.perf_counter()
    data = collect(args.dataset, args.seed, args.users, members)
    scorers = {
        "linear": lambda: Ridge(alpha=1.0),
        "trees": lambda: HistGradientBoostingRegressor(max_iter=200, max_leaf_nodes=15, random_state=0),
        "mlp": lambda: make_pipeline(
            StandardScaler(),
            MLPRegressor(hidden_layer_sizes=(32, 32), alpha=1e-3, max_iter=300, early_stopping=True, random_state=0),
        ),
    }
    out = {}
    for obs in [k for k in ("old", "new", "response_features") if k in data]:
        for name, make in scorers.items():
            out[f"{obs}_{name}"] = round(agreement(data[obs], data["target"], data["group"], make()), 4)
    if "members_mean" in data:
        for name, make in scorers.items():
            rho = agreement(data["new"], data["members_mean"], data["group"], make())
            out[f"new_{name}_vs_members_mean"] = round(rho, 4)
    if len(data["twin"]):
        out["twin_fold_models"] = round(float(np.nanmean(data["twin"])), 4)
    if len(data["twin_members"]):
        out["twin_members"] = round(float(np.nanmean(data["twin_members"])), 4)
    out["seconds"] = round(time.perf_counter() - start, 1)
    head = {"dataset": args.dataset, "seed": args.seed, "users": args.users, "members": members}
    print(json.dumps({**head, **out}, indent=2))


if __name__ == "__main__":
    main()
