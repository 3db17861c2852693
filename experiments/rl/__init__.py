"""CleanRL-style SB3 scripts: train on the fast-user env, evaluate on the persona env, compare with recommenders."""
