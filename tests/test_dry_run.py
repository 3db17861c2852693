"""`simrec compare` plans its LLM use: the `--dry-run` estimate comes before any LLM call and a mock run then makes
what it said; the runner batch fills the endpoints."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from experiments.cli import app
from experiments.compare import (
    AUTO_PROCESSES_SLOTS,
    BUSY_HINT_BELOW,
    PIPELINE_CHUNK,
    RUNNER_BATCH,
    busy_hint,
    compare_engine,
    runner_batch,
    runner_slots,
)
from experiments.config import load_config
from experiments.dry_run import run_dry_run
from experiments.report import read_run
from tests.servers.fault_server import FaultServer

TINY_MF = "[models.mf]\ndim = 16\nepochs = 4\neval_every = 2\nbatch_size = 512\n"


@pytest.fixture(scope="module", name="cache_dir")
def cache_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data/model cache for the module: parsed data, the tiny MF and the response model are built once."""
    return tmp_path_factory.mktemp("cache")


def _settings(tmp_path: Path, cache_dir: Path, n_personas: int, **llm: str) -> dict:
    """A seconds-long comparison (synthetic data, hashing embedder, tiny MF) as nested config overrides."""
    models = tmp_path / "tiny_models.toml"
    models.write_text(TINY_MF)
    return {
        "data": {"dataset": "synthetic", "n_personas": n_personas, "cache_dir": str(cache_dir)},
        "users": {"kind": "persona", "embedder": "hashing"},
        "simulation": {"pages": 3},
        "run": {"out_dir": str(tmp_path / "runs")},
        "recommenders": {"config_file": str(models), "names": ["random", "pop", "mf"]},
        "llm": llm,
    }


def _flags(settings: dict) -> list[str]:
    """The same settings as command-line flags."""
    return [
        arg
        for section, values in settings.items()
        for key, value in values.items()
        for arg in (
            f"--{section}.{key.replace('_', '-')}",
            json.dumps(value) if isinstance(value, list) else str(value),
        )
    ]


def test_dry_run_estimate_is_within_10_percent_of_the_calls_a_mock_run_makes(tmp_path: Path, cache_dir: Path) -> None:
    settings = _settings(tmp_path, cache_dir, 40, backend="mock", price_per_mtok=0.5)
    out = io.StringIO()
    estimate = run_dry_run(load_config(None, settings), Console(file=out, width=200), pilot=16)
    assert "No LLM call was made" in out.getvalue() and "at 0.5 per million tokens" in out.getvalue()
    assert not (tmp_path / "runs").exists()  # a dry run writes no run directory
    assert estimate.n_pilot == 16 and estimate.n_personas == 40  # a forecast from a sample, not a replay
    low, high = estimate.cost() or (0.0, 0.0)
    assert low == pytest.approx(estimate.tokens_low * 0.5 / 1e6) and high > low
    app(["compare", *_flags(settings), "--run.name", "real"])
    calls = read_run(tmp_path / "runs" / "real").llm_calls
    assert len(calls) > 100
    assert estimate.calls == pytest.approx(len(calls), rel=0.10)
    tokens = int(calls["prompt_tokens"].sum() + calls["completion_tokens"].sum())
    assert estimate.tokens_low == pytest.approx(tokens, rel=0.10)
    assert {t.template for t in estimate.templates} == set(calls["template"])


def test_dry_run_sends_nothing_to_the_configured_endpoint(tmp_path: Path, cache_dir: Path, capsys) -> None:
    with FaultServer() as server:
        flags = _flags(_settings(tmp_path, cache_dir, 8, backend="openai", model="m", base_url=server.base_url))
        app(["compare", "--dry-run", *flags, "--llm.price-per-mtok", "2"])
    out = capsys.readouterr().out
    assert sum(server.stats.values()) == 0 and not server.authorizations
    assert "cost ~" in out and "at 2 per million tokens" in out


def test_compare_steps_enough_personas_together_to_fill_the_endpoints() -> None:
    """With an endpoint backend the runner batch covers every endpoint's concurrency (a page step sends one call
    per live persona and waits for the slowest); in-process backends keep the small batch."""
    two = ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
    assert runner_batch(load_config(None, {"llm": {"backend": "mock", "concurrency": 64}})) == RUNNER_BATCH
    endpoint = {"backend": "openai", "model": "m", "concurrency": 64}
    assert runner_batch(load_config(None, {"llm": endpoint | {"base_url": two}})) == 128
    assert runner_batch(load_config(None, {"llm": endpoint | {"base_url": two[0], "concurrency": 4}})) == RUNNER_BATCH
    assert runner_slots(load_config(None, {"llm": endpoint | {"base_url": two}})) is None  # fitted users: no text


def test_compare_pipelines_llm_users_on_endpoints() -> None:
    """LLM users on endpoints: as many sessions in flight as the endpoints take requests, checkpoints every
    `PIPELINE_CHUNK` x that many personas; on an in-process backend they step page by page."""
    two = ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
    llm_users = {"users": {"kind": "llm-only"}}
    config = load_config(
        None, {"llm": {"backend": "openai", "model": "m", "concurrency": 16, "base_url": two}} | llm_users
    )
    assert runner_slots(config) == 32
    assert runner_batch(config) == PIPELINE_CHUNK * 32
    mock = load_config(None, {"llm": {"backend": "mock", "concurrency": 16}} | llm_users)
    assert runner_slots(mock) is None and runner_batch(mock) == RUNNER_BATCH
    ray = config.model_copy(update={"engine": "ray"})  # shards are made of chunks: keep them small
    assert runner_slots(ray) == 32 and runner_batch(ray) == 32
    processes = config.model_copy(update={"engine": "processes"})  # the local chunks: the local run directory
    assert runner_slots(processes) == 32 and runner_batch(processes) == PIPELINE_CHUNK * 32


def test_a_local_run_that_leaves_its_endpoint_idle_is_told_about_the_processes_engine() -> None:
    """At >= 32 requests in flight one process can be what limits the endpoint (docs/LLM_ENDPOINTS.md): below
    `BUSY_HINT_BELOW` busy, compare names the engine that adds this machine's other cores; nothing otherwise."""
    low = BUSY_HINT_BELOW - 0.1
    hint = busy_hint(low, 128, "local", cpus=2)
    assert hint is not None and "--engine processes --processes.workers 2" in hint and "128" in hint
    assert "--processes.workers 4" in (busy_hint(low, 128, "local", cpus=16) or "")
    assert busy_hint(BUSY_HINT_BELOW + 0.05, 128, "local", cpus=2) is None  # busy enough
    assert busy_hint(low, 16, "local", cpus=2) is None  # few in flight: the endpoint, not the client, is the limit
    assert busy_hint(low, 128, "processes", cpus=2) is None  # already spread out
    assert busy_hint(low, 128, "local", cpus=1) is None  # no other core to add


def test_engine_auto_shards_a_compare_only_when_one_process_cannot_feed_the_endpoint() -> None:
    """auto: the processes engine for LLM users on an endpoint with >= `AUTO_PROCESSES_SLOTS` requests in flight on
    a machine of >= 2 cores; local otherwise; an engine named explicitly is kept."""
    llm_users = {"users": {"kind": "llm-only"}}
    many = {"llm": {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1", "concurrency": 32}}
    config = load_config(None, many | llm_users)
    assert config.engine == "auto" and runner_slots(config) == AUTO_PROCESSES_SLOTS
    assert compare_engine(config, cpus=2) == "processes"
    assert compare_engine(config, cpus=1) == "local"  # no other core to add
    few = load_config(None, {"llm": many["llm"] | {"concurrency": 8}} | llm_users)
    assert compare_engine(few, cpus=8) == "local"  # the endpoint, not the client, is the limit
    assert compare_engine(load_config(None, many), cpus=8) == "local"  # fitted users: no LLM call
    assert compare_engine(load_config(None, {"llm": {"backend": "mock", "concurrency": 64}} | llm_users), 8) == "local"
    assert compare_engine(config.model_copy(update={"engine": "local"}), cpus=8) == "local"
    assert compare_engine(load_config(None, {"engine": "ray"}), cpus=8) == "ray"
    assert runner_batch(config) == runner_batch(config.model_copy(update={"engine": "local"}))
