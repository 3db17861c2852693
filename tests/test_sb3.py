"""SB3 smoke: PPO and DQN train a few hundred steps on the fast-user env, then face the persona env next to
the recommenders through the comparison runner."""

import dataclasses

import numpy as np

from experiments.rl import train_dqn, train_ppo
from experiments.rl.common import parse_args
from simenv.eventlog import read_table


def _check(table, name, out_dir):
    assert set(table["policy"]) == {name, "random", "pop"}
    assert set(table["metric"]) == {"P_view", "N_like", "P_like", "N_exit", "S_sat"}
    assert table["n_users"].eq(8).all()
    assert not table[["mean", "ci_low", "ci_high"]].isna().any().any()
    events = read_table(out_dir / "eval" / name, "events")
    assert events["user"].nunique() == 8
    for _, rows in events.groupby("episode"):
        assert rows["item"].is_unique


def test_ppo_smoke(tmp_path):
    args = train_ppo.Args(
        total_timesteps=256,
        n_steps=128,
        batch_size=64,
        n_epochs=2,
        dataset="synthetic",
        eval_users=8,
        out_dir=str(tmp_path),
    )
    table = train_ppo.main(args)
    _check(table, "ppo", tmp_path)
    assert (tmp_path / "model.zip").exists()


def test_dqn_smoke(tmp_path):
    args = train_dqn.Args(
        total_timesteps=256, learning_starts=64, batch_size=32, dataset="synthetic", eval_users=8, out_dir=str(tmp_path)
    )
    table = train_dqn.main(args)
    _check(table, "dqn", tmp_path)


def test_parse_args_reads_every_field():
    args = parse_args(train_ppo.Args, ["--seed", "3", "--n-users", "50", "--compare", "pop", "mf"])
    assert args == dataclasses.replace(train_ppo.Args(), seed=3, n_users=50, compare=("pop", "mf"))
    assert np.isscalar(args.learning_rate)
