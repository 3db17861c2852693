"""The page kernel (`simenv.kernel*`): the one invalid-action rule, action checks, batched rewards, episode end, and
that both env front ends (`RecEnv`, `FastRecVectorEnv`) apply the same rule and hold no copy of each other's code."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import simenv
import simrec  # noqa: F401  (registers the ids)
from simenv import kernel
from simenv.kernel import InvalidActionError, check_actions, repair_slates
from simenv.records import ItemReaction, PageFeedback
from simenv.rewards import RewardConfig, page_reward

SMALL = {"dataset": "synthetic"}
C = 10


def _repair(page, shown=(), pending=None, rule="repair"):
    mask = np.zeros((1, C), dtype=bool)
    mask[0, list(shown)] = True
    pend = None
    if pending is not None:
        pend = np.zeros((1, C), dtype=bool)
        pend[0, list(pending)] = True
    ids = 100 + np.arange(C)[None]
    chosen, n = repair_slates(np.array([page]), mask, ids, rule, pend)
    return chosen[0].tolist(), int(n[0])


@pytest.mark.parametrize(
    ("page", "shown", "expected", "n_repaired"),
    [
        ([0, 1, 2, 3], (), [0, 1, 2, 3], 0),
        ([0, 0, 1, 2], (), [0, 3, 1, 2], 1),  # one duplicate costs one repair, valid slots stay (issue 14 item 10)
        ([0, 0, 0, 0], (), [0, 1, 2, 3], 3),
        ([4, 1, 2, 3], (0, 4), [5, 1, 2, 3], 1),  # shown on an earlier page: the best free candidate not on the page
        ([1, 1, 5, 5], (0, 1), [2, 3, 5, 4], 3),  # slot 0 shown, slot 1 shown, slot 3 repeats slot 2
    ],
)
def test_repair_changes_only_invalid_slots(page, shown, expected, n_repaired):
    assert _repair(page, shown) == (expected, n_repaired)


def test_repair_of_a_sequential_slot_skips_the_page_being_filled():
    assert _repair([2], shown=(0,), pending=(1, 2)) == ([3], 1)
    assert _repair([4], shown=(0,), pending=(1, 2)) == ([4], 0)


def test_strict_rule_names_slot_candidate_item_and_why():
    with pytest.raises(InvalidActionError, match=r"^slot 1: candidate 0 \(item 100\) is already on this page"):
        _repair([0, 0, 1, 2], rule="strict")
    with pytest.raises(InvalidActionError, match=r"^slot 2: candidate 3 \(item 103\) was shown on an earlier page"):
        _repair([1, 2, 3, 4], shown=(3,), rule="strict")
    shown = np.zeros((2, C), dtype=bool)
    shown[1, 7] = True
    with pytest.raises(InvalidActionError, match=r"^env 5 slot 0: candidate 7 \(item 7\)"):
        repair_slates(np.array([[1, 2], [7, 3]]), shown, np.tile(np.arange(C), (6, 1)), "strict", env_ids=[4, 5])


def test_batched_repair_equals_row_by_row():
    rng = np.random.default_rng(0)
    c = 12
    pages = rng.integers(0, c, size=(200, 4))
    shown = np.zeros((200, c), dtype=bool)
    for row in shown:
        row[rng.choice(c, size=rng.integers(0, 8), replace=False)] = True  # at least 4 candidates stay free
    ids = np.tile(np.arange(c), (200, 1))
    batch, n_batch = repair_slates(pages, shown, ids, "repair")
    for i in range(200):
        one, n_one = repair_slates(pages[i : i + 1], shown[i : i + 1], ids[i : i + 1], "repair")
        assert batch[i].tolist() == one[0].tolist() and n_batch[i] == n_one[0]
        assert len(set(batch[i].tolist())) == 4 and not shown[i, batch[i]].any()
        valid = [j for j in range(4) if not shown[i, pages[i, j]] and pages[i, j] not in pages[i, :j]]
        assert all(batch[i, j] == pages[i, j] for j in valid)
        assert n_batch[i] == 4 - len(valid)


def test_page_is_clean_agrees_with_the_rule():
    rng = np.random.default_rng(1)
    for _ in range(300):
        page = rng.integers(0, C, size=4).tolist()
        shown = set(rng.choice(C, size=3, replace=False).tolist())
        assert kernel.page_is_clean(page, shown) == (_repair(page, shown)[1] == 0)


def test_both_envs_repair_the_cascade_case_with_one_repair():
    single = gym.make("simrec/FastRec-v1", **SMALL)
    _, info = single.reset(seed=0)
    ids = info["candidate_ids"]
    _, _, _, _, info = single.step(np.array([0, 0, 1, 2]))
    assert info["n_repaired"] == 1 and info["page_items"].tolist() == ids[[0, 3, 1, 2]].tolist()
    venv = gym.make_vec("simrec/FastRec-v1", num_envs=2, **SMALL)
    _, info = venv.reset(seed=0)
    ids = info["candidate_ids"][0]
    _, _, _, _, info = venv.step(np.array([[0, 0, 1, 2], [5, 6, 7, 8]]))
    assert info["n_repaired"].tolist() == [1, 0]
    assert info["page_items"][0].tolist() == ids[[0, 3, 1, 2]].tolist()


@pytest.mark.parametrize(
    ("action", "shape", "batched", "match"),
    [
        (np.array([0, 1, 2]), (4,), False, r"shape \(4,\), got shape \(3,\)"),
        (np.array([0.0, 1.0, 2.0, 3.0]), (4,), False, "dtype float64"),
        (np.array([0, 1, 2, 40]), (4,), False, "slot 3: candidate index 40 outside 0..39"),
        (np.array(41), (), False, "action: candidate index 41 outside 0..39"),
        (np.array([[0, 1], [2, -1]]), (2, 2), True, "env 1 slot 1: candidate index -1 outside 0..39"),
    ],
)
def test_check_actions_errors(action, shape, batched, match):
    with pytest.raises(InvalidActionError, match=match):
        check_actions(action, shape, 40, batched=batched)


def test_check_actions_accepts_a_one_element_slot_and_lists():
    assert int(check_actions(np.array([7]), (), 40)) == 7
    assert check_actions([1, 2, 3, 4], (4,), 40).tolist() == [1, 2, 3, 4]


def test_batched_page_rewards_equal_the_record_rewards_bit_for_bit():
    rng = np.random.default_rng(2)
    cfg = RewardConfig(watch=1.0, like=0.5, rating=0.1, exit_penalty=2.0, satisfaction=0.3)
    watched = rng.random((500, 4)) < 0.5
    stars = np.where(watched, rng.integers(1, 6, size=(500, 4)), 0)
    left = rng.random(500) < 0.3
    batched = kernel.page_rewards(watched, stars, left, cfg)
    for i in range(500):
        reactions = tuple(
            ItemReaction(j, bool(w), int(s) if w else None)
            for j, (w, s) in enumerate(zip(watched[i], stars[i], strict=True))
        )
        assert batched[i] == page_reward(PageFeedback(reactions, bool(left[i])), cfg)
    assert kernel.terminal_rewards(np.array([3, 7]), cfg).tolist() == pytest.approx([0.9, 2.1])
    assert kernel.terminal_rewards(np.array([3, 7]), RewardConfig()).tolist() == [0.0, 0.0]


def test_episode_end_on_scalars_and_arrays():
    assert kernel.episode_end(True, 5, 5) == (True, False)
    assert kernel.episode_end(False, 5, 5) == (False, True)
    assert kernel.episode_end(False, 2, 5) == (False, False)
    term, trunc = kernel.episode_end(np.array([True, False, False]), np.array([5, 5, 2]), 5)
    assert term.tolist() == [True, False, False] and trunc.tolist() == [False, True, False]


def test_one_n_candidates_default_everywhere():
    single = gym.make("simrec/FastRec-v1", **SMALL, max_pages=30).unwrapped
    venv = gym.make_vec("simrec/FastRec-v1", num_envs=2, **SMALL, max_pages=30)
    assert single.n_candidates == venv.n_candidates == kernel.default_n_candidates(4, 30) == 240


def _windows(path: Path, size: int = 6) -> set[tuple[str, ...]]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    code = [line for line in lines if line and not line.startswith(("#", '"""')) and len(line) > 3]
    return {tuple(code[i : i + size]) for i in range(len(code) - size + 1)}


def test_no_block_of_six_lines_is_shared_between_the_env_implementations():
    root = Path(simenv.__file__).parent
    shared = _windows(root / "env.py") & _windows(root / "vector_env.py")
    assert not shared, sorted(shared)[:3]


def test_env_and_kernel_modules_stay_small():
    root = Path(simenv.__file__).parent
    sizes = {p.name: len(p.read_text().splitlines()) for p in root.glob("*.py")}
    assert max(sizes.values()) <= 400, sizes
