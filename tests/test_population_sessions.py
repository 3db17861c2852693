"""Issue 14 item 11: a persona who left in one round logs in again later as a new session with its memory."""

from __future__ import annotations

import numpy as np

from agents.embedding import HashingEmbedder
from agents.llm_user import LLMUserModel
from experiments.population import PopulationConfig, PopulationModel
from recommenders.registry import make
from simenv.llm import MockLLM
from tests.fixtures_agents import tiny_world


def test_llm_users_who_left_come_back_in_a_new_session_with_their_memory() -> None:
    dataset, split, personas = tiny_world()
    users = LLMUserModel(dataset, MockLLM(seed=0), HashingEmbedder(), train=split.train)
    model = PopulationModel(
        dataset,
        split.train,
        list(personas.values()),
        users,
        lambda: make("pop"),
        PopulationConfig(rounds=5, retrain=False, login_prob=(1.0, 1.0, 1.0)),
        rng=np.random.default_rng(0),
    )
    left_before: dict[int, object] = {}
    returned = 0
    episodes: list[int] = []
    for _ in range(5):
        model.step()  # raised "user ... already left in episode ..." in round 2 before the fix
        for agent in model.agents:
            session = agent.session
            episodes.append(session.episode)
            if agent.persona.user_id in left_before:
                returned += 1
                assert session.memory is left_before[agent.persona.user_id]  # memory carried over
            if session.left:
                left_before[agent.persona.user_id] = session.memory
    assert left_before, "some persona left during the run"
    assert returned > 0, "a persona who left logged in again"
    assert len(set(episodes)) == len(episodes), "every log-in is its own episode"
    assert model.n_sessions == 5 * len(personas)
