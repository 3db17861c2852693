"""`simrec validate` runs LLM users on an endpoint pipelined, as `compare` does (issue 26 item 10: keep the endpoint
busy through a whole run): sessions in flight up to the endpoint's concurrency instead of page steps of 64 that wait
for their slowest call, with the same events and the same validity figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import experiments.validate as validate_module
from experiments.cli import app
from experiments.world import World
from simenv.eventlog import read_table
from tests.servers.fault_server import FaultServer


def prose(body: dict) -> str:
    return "These all look fine."  # every page falls back to the seeded rule: the same decisions either way


def _validate(root: Path, name: str, url: str) -> Path:
    app(["validate", "--users.embedder", "hashing", "--validity.policies", '["random", "pop"]',
         "--validity.n-personas", "40", "--validity.bootstrap", "20", "--data.dataset", "synthetic",
         "--users.kind", "llm-only", "--llm.backend", "openai", "--llm.model", "m", "--llm.base-url", url,
         "--llm.max-fallback-share", "1", "--llm.concurrency", "4", "--simulation.pages", "3",
         "--run.name", name, "--run.out-dir", str(root / "runs"), "--data.cache-dir", str(root / "cache")])  # fmt: skip
    return root / "runs" / name


def test_validate_pipelines_llm_users_on_an_endpoint_with_the_same_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-validate-pipelined-test")
    seen: list[Any] = []
    run_sessions = World.run_sessions

    def spy(self: World, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("concurrency"))
        return run_sessions(self, *args, **kwargs)

    monkeypatch.setattr(World, "run_sessions", spy)
    with FaultServer(responder=prose) as server:
        pipelined = _validate(tmp_path, "pipelined", server.base_url)
        assert seen and set(seen) == {4}  # every policy: 4 sessions in flight, the endpoint's concurrency
        monkeypatch.setattr(validate_module, "runner_slots", lambda config: None)  # the page-by-page loop
        seen.clear()
        stepped = _validate(tmp_path, "stepped", server.base_url)
        assert seen and set(seen) == {None}
    for policy in ("random", "pop"):
        # chunks of 8 x 4 sessions in flight (2 for 40 personas) against one page-by-page batch of 64: twice the parts
        parts = [len(list((run / "policies" / policy / "events").glob("*.parquet"))) for run in (pipelined, stepped)]
        assert parts[0] == 2 * parts[1] > 0, parts
        a, b = (read_table(run / "policies" / policy, "events") for run in (pipelined, stepped))
        assert len(a) > 0
        key = ["episode", "page", "position"]
        pd.testing.assert_frame_equal(
            a.drop(columns="llm_call_id").sort_values(key).reset_index(drop=True),
            b.drop(columns="llm_call_id").sort_values(key).reset_index(drop=True),
        )
    figures = [json.loads((run / "validity.json").read_text())["agreement"] for run in (pipelined, stepped)]
    assert figures[0] == figures[1]
