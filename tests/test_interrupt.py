"""Issue 26 item 7: SIGINT or SIGTERM during `simrec compare` (a real process against a slow loopback endpoint):
the pages in flight are dropped, one line on stderr says how to resume, exit 130, no traceback; the run directory
is then resumable (its logs end at the last checkpoint)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simenv.eventlog import read_table
from simenv.runner import rollback_to_checkpoint
from tests.servers.fault_server import FaultPlan, FaultServer


def prose(body: dict) -> str:
    return "These all look fine."


def _as_from_a_terminal() -> None:
    """The child starts with SIGINT and SIGTERM delivered and SIGINT's default action, as a command typed in a shell
    does: an ignored or blocked SIGINT is inherited through exec, and in the full suite under xdist the worker's
    state made the child ignore Ctrl-C (the run went on to exit 0)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("command", "sig"), [("compare", signal.SIGINT), ("compare", signal.SIGTERM), ("validate", signal.SIGINT)]
)
def test_signal_during_a_run_prints_the_resume_command_and_exits_130(tmp_path: Path, command: str, sig: int) -> None:
    with FaultServer(FaultPlan(latency_s=0.2), responder=prose) as server:
        run_dir = tmp_path / "runs" / "r"
        args = [sys.executable, "-m", "experiments.cli", command, "--users.embedder", "hashing",
                "--validity.policies", '["random", "pop"]', "--validity.n-personas", "40", "--validity.bootstrap", "20",
                "--data.dataset", "synthetic", "--recommenders.names", '["random"]', "--users.kind", "llm-only",
                "--llm.backend", "openai", "--llm.model", "m", "--llm.base-url", server.base_url,
                "--llm.max-fallback-share", "1", "--data.n-personas", "40", "--llm.concurrency", "4", "--run.name", "r",
                "--run.out-dir", str(tmp_path / "runs"), "--data.cache-dir", str(tmp_path / "cache")]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OPENAI_API_KEY": "k"}
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_as_from_a_terminal
        )
        pages = run_dir / "policies" / "random" / "pages"
        deadline = time.monotonic() + 240
        while not (pages.is_dir() and any(pages.iterdir())) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)  # until the first page step is logged: the run is mid-way (2 chunks, 32 + 8 personas, at
            # concurrency 4; with one chunk of all 40 the first step was written near the end, and under load the
            # signal could land after the run had finished)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.startswith("simrec: ")]
    assert len(lines) == 1 and "Traceback" not in err + out, err
    word = "interrupted" if sig == signal.SIGINT else "terminated"
    assert lines[0].startswith(f"simrec: {word}: the pages in flight are dropped")
    assert lines[0].endswith(f"resume with: simrec resume {run_dir}")
    assert (run_dir / "experiment.json").is_file()
    rollback_to_checkpoint(run_dir / "policies" / "random")  # what `simrec resume` does first
    if (run_dir / "policies" / "random" / "checkpoint.json").is_file():
        assert not read_table(run_dir / "policies" / "random", "pages").empty
    if command == "validate":  # `simrec resume` continues a validate run as one, to its end
        with FaultServer(FaultPlan(latency_s=0.05), responder=prose) as server:
            env["OPENAI_BASE_URL"] = server.base_url
            data = json.loads((run_dir / "experiment.json").read_text())
            data["llm"]["base_url"] = [server.base_url]  # the new server's port (the config check compares it)
            (run_dir / "experiment.json").write_text(json.dumps(data))
            done = subprocess.run([sys.executable, "-m", "experiments.cli", "resume", str(run_dir)], env=env,
                                  capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (run_dir / "validity.json").is_file()
