"""One configuration error and one set of defaults across the layers (issue 13 item 4)."""

from __future__ import annotations

import inspect
import tomllib

import pytest

import simenv
from agents.config import ConfigError as AgentsConfigError
from agents.config import load_user
from experiments.config import DEFAULTS, ConfigError, LLMSection
from experiments.population import PopulationConfig
from simenv import defaults, kernel
from simenv.errors import ConfigError as CoreConfigError
from simenv.llm import LLMConfig
from simenv.policies import SB3Recommender
from simenv.protocols import PagePolicy, Recommender
from simenv.runner import run_sessions


def test_one_config_error_class():
    assert ConfigError is AgentsConfigError is CoreConfigError
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ConfigError, match="no user kind"):
        load_user("no-such-kind")
    with pytest.raises(ConfigError, match="unknown llm field"):
        LLMConfig.from_mapping({"api_key": "x"})


def test_llm_section_defaults_are_the_llm_layers():
    core, section = LLMConfig(), LLMSection()
    for name in ("backend", "base_url", "structured_output", "temperature", "concurrency", "timeout_s"):
        assert getattr(section, name) == getattr(core, name), name
    assert (section.max_retries, section.max_calls, section.max_total_tokens) == (
        core.max_retries,
        core.max_calls,
        core.max_total_tokens,
    )
    assert section.backend == "mock"


def _default(func, name):
    return inspect.signature(func).parameters[name].default


def test_session_defaults_written_once():
    assert (DEFAULTS.simulation.pages, DEFAULTS.simulation.page_size) == (defaults.MAX_PAGES, defaults.PAGE_SIZE)
    assert (simenv.PAGES, simenv.PAGE_SIZE) == (defaults.MAX_PAGES, defaults.PAGE_SIZE)
    for func in (kernel.apply_settings, SB3Recommender.__init__):
        assert _default(func, "page_size") == defaults.PAGE_SIZE
        assert _default(func, "max_pages") == defaults.MAX_PAGES
        assert _default(func, "explore_fraction") == defaults.EXPLORE_FRACTION
        assert _default(func, "history_len") == defaults.HISTORY_LEN
    assert (_default(run_sessions, "n_pages"), _default(run_sessions, "page_size")) == (
        defaults.MAX_PAGES,
        defaults.PAGE_SIZE,
    )
    population = PopulationConfig()
    assert population.page_size == defaults.PAGE_SIZE
    assert (population.rounds, population.login_prob, population.retrain) == (
        DEFAULTS.population.rounds,
        DEFAULTS.population.login_prob,
        DEFAULTS.population.retrain,
    )


def test_rl_held_out_personas_written_once():
    """train-rl, the gym ids' persona split and `simrec.rl.evaluate` hold out the same personas by default."""
    import simrec.envs
    import simrec.rl_evaluate

    assert DEFAULTS.rl.eval_personas == defaults.EVAL_PERSONAS
    for func in (simrec.envs.make_env, simrec.envs.make_vector_env):
        assert _default(func, "eval_personas") == defaults.EVAL_PERSONAS
    assert _default(simrec.rl_evaluate.evaluate, "eval_personas") in (None, defaults.EVAL_PERSONAS)


def test_sb3_recommender_is_a_page_policy_not_a_recommender():
    policy = SB3Recommender.__new__(SB3Recommender)  # the protocol check needs only its attributes
    policy.name = "sb3"
    assert isinstance(policy, PagePolicy)
    assert not isinstance(policy, Recommender)  # no fit, no score
    assert Recommender.__mro__[1] is PagePolicy  # every Recommender is a page policy
    assert inspect.signature(run_sessions).parameters["recommender"].annotation == "PagePolicy"


def test_one_user_behind_the_library_the_cli_and_validate():
    """The library builders, the CLI and `simrec validate` resolve the same user kind with the same numbers; the
    packaged users.toml holds only the kinds (every default is a dataclass default, once)."""
    from agents.config import DEFAULT_KIND, default_config_path, load_user
    from experiments.config import UsersSection
    from experiments.validate import with_validate_defaults
    from simrec.envs import env_config

    spec = load_user()
    assert spec.kind == DEFAULT_KIND == "fitted" and not spec.writes_text and spec.decision.response == "full"
    assert UsersSection().spec() == DEFAULTS.users.spec() == spec
    assert env_config().users.spec() == spec  # what gym.make / simrec.make_env build
    assert with_validate_defaults(DEFAULTS).users.spec() == spec
    with default_config_path().open("rb") as fh:
        assert set(tomllib.load(fh)) == {"kinds"}
