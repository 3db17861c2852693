"""Defaults that more than one layer uses, written once: the environments, the runner, the SB3 page policy,
the experiment config's sections and the RL scripts all take their session shape from here.

Agent4Rec's session: up to `MAX_PAGES` pages of `PAGE_SIZE` items. What each setting means is documented in
`simenv.env.RecEnv` (the env settings) and `experiments.config` (the config sections and CLI flags).
"""

from __future__ import annotations

PAGE_SIZE = 4
"""Items per page (Agent4Rec: 4)."""
MAX_PAGES = 5
"""Page limit per session (Agent4Rec: 5)."""
EXPLORE_FRACTION = 0.25
"""Share of an env's candidate set drawn at random from the rest of the catalog."""
HISTORY_LEN = 8
"""Rows of an env observation's history."""
DATASET = "ml-100k"
"""The dataset a run or `gym.make` loads when none is named."""
EVAL_PERSONAS = 350
"""Personas an RL run holds out from training and scores its policy on (`simrec train-rl`, the gym ids'
`personas="train"/"held_out"`, `simrec.rl.evaluate`): half of ML-100K's 703 eligible users, enough for a real-hit
difference of ~0.02 to have a persona-bootstrap interval clear of 0."""
MIN_LIKED = 20
"""Agent4Rec split eligibility: a user needs at least this many ratings above 3."""
