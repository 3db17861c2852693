"""Issue 26: when the endpoint fails, say so. The real CLI against a real loopback server (tests/servers): a wrong
key, an unknown model or a dead address fail the pre-flight request (exit 1, one line naming the endpoint, no key,
no run directory); a run whose page decisions keep falling back stops at `[llm] max_fallback_share` (exit 1,
resumable); a run name that is a path and a base URL with credentials are bad input (exit 2)."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from experiments.cli import app
from tests.fixtures_cache import seed_response_cache
from tests.servers.fault_server import FaultServer

KEY = "sk-test-right-key-0123456789"
WRONG = "sk-test-wrong-key-9876543210"
FAST = ["--users.embedder", "hashing", "--data.dataset", "synthetic", "--recommenders.names", '["random"]']


def run(tmp_path: Path, capsys, args: list[str], expect: int) -> tuple[str, str]:
    """`simrec` with an isolated out dir and cache; the exit code must be `expect`; returns (last stderr line, out)."""
    with pytest.raises(SystemExit) as info:
        app([*args, "--run.out-dir", str(tmp_path / "runs"), "--data.cache-dir", str(tmp_path / "cache")])
    captured = capsys.readouterr()
    assert info.value.code == expect, captured.err
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("simrec: ")]
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0], captured.out


def _openai(url: str, model: str = "m") -> list[str]:
    return ["compare", *FAST, "--users.kind", "persona", "--llm.backend", "openai", "--llm.model", model,
            "--llm.base-url", url, "--llm.max-retries", "0", "--run.name", "r"]  # fmt: skip


def _dead_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_preflight_names_the_endpoint_for_wrong_key_unknown_model_and_dead_address(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FaultServer(api_key=KEY, models=("m",)) as server:
        monkeypatch.setenv("OPENAI_API_KEY", WRONG)
        line, _ = run(tmp_path, capsys, _openai(server.base_url), expect=1)
        assert line == f"simrec: LLM endpoint {server.base_url} rejected the API key (HTTP 401; set OPENAI_API_KEY)"
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        line, _ = run(tmp_path, capsys, _openai(server.base_url, model="no-such-model"), expect=1)
        assert line.startswith(f"simrec: LLM endpoint {server.base_url} does not serve model 'no-such-model'")
        assert "HTTP 404" in line
        assert server.stats["refused_401"] == 1 and server.stats["refused_404"] == 1  # one request each, no retry
    line, _ = run(tmp_path, capsys, _openai(_dead_url()), expect=1)
    assert "cannot be reached (connection failed" in line
    assert not (tmp_path / "runs").exists(), "the pre-flight failures wrote a run directory"


def test_endpoint_secrets_in_userinfo_query_and_headers_never_reach_a_message(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    line, _ = run(tmp_path, capsys, _openai("http://alice:hunter2-secret@127.0.0.1:9/v1"), expect=2)
    assert "credentials in the URL" in line and "hunter2-secret" not in line and "alice" not in line
    dead = _dead_url()
    line, _ = run(tmp_path, capsys, _openai(dead + "?api-key=query-secret-123"), expect=1)
    assert "query-secret-123" not in line and f"{dead}?<redacted>" in line
    assert not (tmp_path / "runs").exists()


def test_run_name_must_be_a_name(tmp_path: Path, capsys) -> None:
    for name in ("../escape", "a/b", "/abs/path", ".."):
        line, _ = run(tmp_path, capsys, ["compare", *FAST, "--llm.backend", "mock", "--run.name", name], expect=2)
        assert "[run.name] Value error, must be a plain name" in line, line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "escape").exists()


def prose(body: dict) -> str:
    return "I think these all look like fine movies to me."


def test_fallback_share_above_the_limit_stops_the_run_resumably(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FaultServer(responder=prose, api_key=KEY) as server:
        args = [*_openai(server.base_url), "--users.kind", "llm-only", "--data.n-personas", "12"]
        line, _ = run(tmp_path, capsys, args, expect=1)
    run_dir = tmp_path / "runs" / "r"
    assert line.startswith("simrec: policy random: ") and "pages fell back" in line, line
    assert f"> [llm] max_fallback_share 5%); stopped, the run is resumable: simrec resume {run_dir}" in line
    config = json.loads((run_dir / "experiment.json").read_text())
    assert config["llm"]["max_fallback_share"] == 0.05
    assert (run_dir / "policies" / "random" / "pages").is_dir()  # the pages up to the stop are logged


def header_prose(body: dict) -> str:
    return "I cannot answer. Debug: X-Api-Key: header-secret-4242; Authorization: Bearer header-secret-4242"


def test_no_secret_from_url_query_env_or_header_in_any_file_a_run_writes(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FaultServer(responder=header_prose, api_key=KEY) as server:
        url = server.base_url + "?api-key=query-secret-777"
        args = [*_openai(url), "--users.kind", "llm-only", "--data.n-personas", "12", "--log.prompts", "full"]
        line, out = run(tmp_path, capsys, args, expect=1)  # every decision falls back: the limit stops the run
    assert "pages fell back" in line
    run_dir = tmp_path / "runs" / "r"
    stored = json.loads((run_dir / "experiment.json").read_text())
    assert stored["llm"]["base_url"] == [f"{server.base_url}?<redacted>"]
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()] + list((tmp_path / "cache").rglob("*"))
    assert any(p.parent.name == "llm_calls" for p in files)
    for path in (p for p in files if p.is_file()):
        data = path.read_bytes()
        for secret in (KEY, "query-secret-777", "header-secret-4242"):
            assert secret.encode() not in data, (path, secret)
    for secret in (KEY, "query-secret-777", "header-secret-4242"):
        assert secret not in line + out
    # resume: the stored base URL is redacted, so it comes from $OPENAI_BASE_URL (here: the server is gone)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    for env, code, expected in ((None, 2, "was stored redacted; set OPENAI_BASE_URL"), (url, 1, "cannot be reached")):
        if env is not None:
            monkeypatch.setenv("OPENAI_BASE_URL", env)
        with pytest.raises(SystemExit) as info:
            app(["resume", str(run_dir)])
        err = capsys.readouterr().err
        assert info.value.code == code and expected in err and "query-secret-777" not in err, err


def test_sizes_are_checked_before_anything_is_written(tmp_path: Path, capsys, caplog) -> None:
    mock = ["compare", *FAST, "--llm.backend", "mock", "--run.name", "r"]
    line, _ = run(tmp_path, capsys, [*mock, "--simulation.page-size", "100000"], expect=2)
    assert "[simulation.page_size] 100000 exceeds the catalog's" in line
    line, _ = run(tmp_path, capsys, [*mock, "--simulation.pages", "400", "--simulation.page-size", "4"], expect=2)
    assert "= 400 x 4 = 1600 items per session, but persona" in line and "candidates" in line
    assert not (tmp_path / "runs").exists()


def test_more_personas_than_available_is_one_warning_and_the_count_run_is_recorded(
    tmp_path: Path, caplog, fitted_response: Path
) -> None:
    args = [
        "compare",
        *FAST,
        "--users.kind",
        "fitted",
        "--data.n-personas",
        "100000",
        "--simulation.pages",
        "1",
        "--run.name",
        "many",
        "--run.out-dir",
        str(tmp_path / "runs"),
        "--data.cache-dir",
        str(seed_response_cache(tmp_path / "c", fitted_response)),
    ]
    # fmt: skip
    with caplog.at_level(logging.WARNING, logger="experiments.preflight"):
        app(args)
    warnings = [r.getMessage() for r in caplog.records if r.name == "experiments.preflight"]
    assert len(warnings) == 1 and warnings[0].startswith("100000 personas requested, "), warnings
    available = int(warnings[0].split(", ")[1].split()[0])
    config = json.loads((tmp_path / "runs" / "many" / "policies" / "random" / "config.json").read_text())
    assert config["n_episodes"] == available < 100000


def test_redact_blanks_url_credentials_queries_and_key_headers_but_not_titles() -> None:
    from simenv.llm.secrets import redact

    assert redact("GET http://bob:pw-123456@h:8/v1?api-key=q-secret&x=1 failed") == (
        "GET http://<redacted>@h:8/v1?<redacted> failed"
    )
    assert redact('{"X-Api-Key": "hdr-secret-99", "Authorization": "Bearer sk-live-abcdef"}') == (
        '{"X-Api-Key": "<redacted>", "Authorization": "<redacted>"}'
    )
    for prose in ("Keeper of the Secret: The Movie (1999)", "max_tokens=256, prompt_tokens: 10"):
        assert redact(prose) == prose
