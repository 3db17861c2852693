"""The HTTP recommender against a real loopback service (tests/servers/recommender_server.py): the wire
format in raw ids, retried faults that change nothing in the run's events, every fault logged and counted,
a dead service covered by the fallback, no retries for a 404, and the concurrency bound."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommenders.external import IdMap
from recommenders.http_client import HTTPRecommender, HTTPRecommenderError
from simenv.eventlog import read_table
from simenv.records import PageRequest
from simenv.runner import run_sessions
from tests.fixtures_env import NoisyUser, tiny_world
from tests.servers.recommender_server import RecommenderServer

DS0, PERSONAS, SPLIT = tiny_world()
# Raw ids unlike the dense ones, so a mix-up of the two cannot pass.
DS = dataclasses.replace(
    DS0,
    item_raw_ids=np.array([str(1000 + 7 * i) for i in range(DS0.n_items)], dtype=object),
    user_raw_ids=np.array([f"u{100 + u}" for u in range(DS0.n_users)], dtype=object),
)
ORDER_DENSE = np.random.default_rng(5).permutation(DS.n_items)
ORDER_RAW = [str(DS.item_raw_ids[i]) for i in ORDER_DENSE]
USERS = sorted(PERSONAS)[:12]


def client(url: str, **config) -> HTTPRecommender:
    config = {"timeout_s": 1.0, "backoff_s": 0.001, **config}  # generous: a loaded machine must not time out
    rec = HTTPRecommender(url=url, id_map=IdMap.of(DS), **config)
    return rec.fit(SPLIT.train, DS.n_users, DS.n_items)


def run(rec, run_dir: Path) -> pd.DataFrame:
    run_sessions(rec, NoisyUser(), PERSONAS, DS, SPLIT.train, run_dir, n_pages=4, page_size=4, seed=3, users=USERS)
    return read_table(run_dir, "events").drop(columns=["run", "policy"])


def expected_page(exclude: set[int], k: int) -> tuple[int, ...]:
    return tuple(int(i) for i in ORDER_DENSE if int(i) not in exclude)[:k]


def test_pages_follow_the_service_and_the_body_uses_raw_ids() -> None:
    with RecommenderServer(ORDER_RAW) as server:
        rec = client(server.url)
        exclude = set(PERSONAS[3].train_items)
        page = rec.recommend(3, 4, exclude, np.random.default_rng(0), history=(int(ORDER_DENSE[0]),))
        assert page.item_ids == expected_page(exclude, 4) and page.propensities is None
        body = server.bodies[-1]
        assert body["user_id"] == "u103" and body["k"] == 4
        assert body["exclude"] == [str(DS.item_raw_ids[i]) for i in sorted(exclude)]
        assert body["history"] == [ORDER_RAW[0]]
        assert rec.report() == {"requests": 1, "pages": 1, "fallback_users": 0}


def test_retried_faults_change_no_event_and_each_is_logged(tmp_path: Path, caplog) -> None:
    with RecommenderServer(ORDER_RAW) as server:
        clean = run(client(server.url), tmp_path / "clean")
    faults = {0: "500", 3: "timeout", 4: "429", 9: "garbage", 12: "excluded", 15: "unknown", 16: "500", 17: "timeout"}
    with caplog.at_level(logging.WARNING), RecommenderServer(ORDER_RAW, faults=faults, slow_s=2.0) as server:
        rec = client(server.url, max_retries=2)
        faulty = run(rec, tmp_path / "faulty")
    pd.testing.assert_frame_equal(clean, faulty)  # nothing lost, nothing different
    assert sorted(server.injected) == sorted(faults.items())
    transport = {"500": "http_500", "429": "http_429", "timeout": "timeout", "garbage": "invalid_body"}
    want = sorted(transport[f] for f in faults.values() if f in transport)
    assert sorted(f.kind for f in rec.failures) == want
    assert rec.stats["dropped_ids"] == 2 and rec.stats.get("fallback_pages", 0) == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(faults)  # one line per fault: 6 failed attempts + 2 dropped ids
    assert sum("dropped 1 unknown, excluded or repeated" in r.getMessage() for r in warnings) == 2


def test_a_dead_service_is_covered_by_the_fallback(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING), RecommenderServer(ORDER_RAW, always="500") as server:
        rec = client(server.url, max_retries=1, fallback="pop")
        events = run(rec, tmp_path / "dead")
    pages = events.groupby(["episode", "page"]).ngroups
    assert events["episode"].nunique() == len(USERS) and rec.stats["pages"] == pages
    assert rec.stats["failed_pages"] == pages and rec.stats["fallback_pages"] == pages
    assert rec.stats["fail_http_500"] == 2 * pages == len(server.bodies)  # first try + one retry per page
    assert sum("giving up" in r.getMessage() for r in caplog.records) == pages
    pop_first = int(np.argmax(rec.popularity))
    first_pages = events[events["page"] == 0].groupby("episode")["item"].apply(list)
    assert any(pop_first in ids for ids in first_pages)  # pop, not the service's order


def test_a_404_is_not_retried_and_a_short_answer_is_filled(caplog) -> None:
    with RecommenderServer(ORDER_RAW, faults={0: "404", 1: "short"}) as server:
        rec = client(server.url, max_retries=3)
        exclude = set(PERSONAS[0].train_items)
        first = rec.recommend(0, 4, exclude, np.random.default_rng(0))
        assert len(server.bodies) == 1 and [f.kind for f in rec.failures] == ["http_404"]
        second = rec.recommend(0, 4, exclude, np.random.default_rng(0))
    assert len(set(first.item_ids)) == 4 and not set(first.item_ids) & exclude
    assert second.item_ids[:3] == expected_page(exclude, 3) and second.item_ids[3] not in exclude
    assert rec.stats["fallback_pages"] == 2 and rec.stats["fallback_items"] == 4 + 1


def test_probe_raises_with_the_status(caplog) -> None:
    with RecommenderServer(ORDER_RAW, always="500") as server:
        rec = client(server.url, max_retries=0)
        with pytest.raises(HTTPRecommenderError, match=r"user 0: http_500: HTTP 500"):
            rec.probe(0, 4, PERSONAS[0].train_items)
    with RecommenderServer(ORDER_RAW, always="excluded") as server:
        with pytest.raises(HTTPRecommenderError, match="answered 5 id.*1 unknown or excluded"):
            client(server.url).probe(0, 4, PERSONAS[0].train_items)


def test_messages_name_ids_as_the_service_wrote_them(caplog) -> None:
    """A raw-id service reads its own ids in the messages (before: dense ids it never sent, e.g. `[0]`)."""
    exclude = PERSONAS[0].train_items
    sent = str(sorted(str(DS.item_raw_ids[i]) for i in exclude)[0])  # what the `excluded` fault puts first
    with RecommenderServer(ORDER_RAW, always="excluded") as server:
        with pytest.raises(HTTPRecommenderError) as info:
            client(server.url).probe(0, 4, exclude)
        assert "user 'u100'" in str(info.value) and f"e.g. ['{sent}']" in str(info.value)
        with caplog.at_level(logging.WARNING):
            client(server.url).recommend(0, 4, exclude, np.random.default_rng(0))
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped == [f"http: user 'u100': dropped 1 unknown, excluded or repeated id(s) ['{sent}']"]


def test_concurrency_is_bounded() -> None:
    calls = [PageRequest(u, 4, set(PERSONAS[u].train_items), np.random.default_rng(u)) for u in range(12)]
    # a generous timeout: a timed-out attempt is retried while the server still serves it (one more in flight)
    with RecommenderServer(ORDER_RAW, latency_s=0.1) as server:
        rec = client(server.url, concurrency=3, timeout_s=30.0)
        pages = rec.recommend_batch(calls)
    assert server.max_in_flight == 3
    assert [p.item_ids for p in pages] == [expected_page(c.exclude, 4) for c in calls]


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="HTTPConfig.url must start with http"):
        HTTPRecommender(url="ftp://x", id_map=IdMap.of(DS))
    with pytest.raises(ValueError, match="HTTPConfig.concurrency must be a positive int"):
        HTTPRecommender(url="http://127.0.0.1:1/", id_map=IdMap.of(DS), concurrency=0)
    with pytest.raises(ValueError, match="ids='raw' needs the dataset's id map"):
        HTTPRecommender(url="http://127.0.0.1:1/")
