"""Issue 26 item 7: SIGINT or SIGTERM during `simrec compare` (a real process against a slow loopback endpoint):
the pages in flight are dropped, one line on stderr says how to resume, exit 130, no traceback; the run directory
is then resumable (its logs end at the last checkpoint).

The three interrupted runs are started together by a module fixture (each waits on its own server's latency
most of the time, so together they take about as long as one) and each is signalled once its own first page step is
logged; each test then checks its run's exit and output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from simenv.eventlog import read_table
from simenv.runner import rollback_to_checkpoint
from tests.servers.fault_server import FaultPlan, FaultServer

CASES = [("compare", signal.SIGINT), ("compare", signal.SIGTERM), ("validate", signal.SIGINT)]


def prose(body: dict) -> str:
    return "These all look fine."


def _as_from_a_terminal() -> None:
    """The child starts with SIGINT and SIGTERM delivered and SIGINT's default action, as a command typed in a shell
    does: an ignored or blocked SIGINT is inherited through exec, and in the full suite under xdist the worker's
    state made the child ignore Ctrl-C (the run went on to exit 0)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OPENAI_API_KEY": "k"}


@dataclass
class Interrupted:
    """One run signalled mid-way: `running` says whether it was still running when signalled."""

    run_dir: Path
    running: bool
    returncode: int
    out: str
    err: str


@pytest.fixture(scope="module", name="interrupted")
def interrupted_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, int], Interrupted]]:
    """Each case's command started against its own slow server, signalled once its first page step is logged."""
    with ExitStack() as servers:
        started = {}
        for command, sig in CASES:
            tmp = tmp_path_factory.mktemp(f"{command}-{sig.name}")
            server = servers.enter_context(FaultServer(FaultPlan(latency_s=0.2), responder=prose))
            args = [sys.executable, "-m", "experiments.cli", command, "--users.embedder", "hashing",
                    "--validity.policies", '["random", "pop"]', "--validity.n-personas", "40",
                    "--validity.bootstrap", "20", "--data.dataset", "synthetic", "--recommenders.names", '["random"]',
                    "--users.kind", "llm-only", "--llm.backend", "openai", "--llm.model", "m",
                    "--llm.base-url", server.base_url, "--llm.max-fallback-share", "1", "--data.n-personas", "40",
                    "--llm.concurrency", "4", "--run.name", "r", "--run.out-dir", str(tmp / "runs"),
                    "--data.cache-dir", str(tmp / "cache")]  # fmt: skip
            proc = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_child_env(),
                preexec_fn=_as_from_a_terminal,
            )
            started[(command, sig)] = (proc, tmp / "runs" / "r")
        running = {}
        waiting = dict(started)
        deadline = time.monotonic() + 240
        while waiting:
            for (command, sig), (proc, run_dir) in list(waiting.items()):
                pages = run_dir / "policies" / "random" / "pages"
                # until the first page step is logged: the run is mid-way (2 chunks, 32 + 8 personas, at
                # concurrency 4; with one chunk of all 40 the first step was written near the end, and under load
                # the signal could land after the run had finished)
                if (pages.is_dir() and any(pages.iterdir())) or time.monotonic() > deadline or proc.poll() is not None:
                    running[(command, sig)] = proc.poll() is None
                    proc.send_signal(sig)
                    del waiting[(command, sig)]
            time.sleep(0.2)
        results = {}
        for case, (proc, run_dir) in started.items():
            out, err = proc.communicate(timeout=120)
            results[case] = Interrupted(run_dir, running[case], proc.returncode, out, err)
    yield results


@pytest.mark.parametrize(("command", "sig"), CASES)
def test_signal_during_a_run_prints_the_resume_command_and_exits_130(
    interrupted: dict[tuple[str, int], Interrupted], command: str, sig: int
) -> None:
    run = interrupted[(command, sig)]
    run_dir = run.run_dir
    assert run.running, (run.out, run.err)
    assert run.returncode == 130, run.err
    lines = [ln for ln in run.err.splitlines() if ln.startswith("simrec: ")]
    assert len(lines) == 1 and "Traceback" not in run.err + run.out, run.err
    word = "interrupted" if sig == signal.SIGINT else "terminated"
    assert lines[0].startswith(f"simrec: {word}: the pages in flight are dropped")
    assert lines[0].endswith(f"resume with: simrec resume {run_dir}")
    assert (run_dir / "experiment.json").is_file()
    rollback_to_checkpoint(run_dir / "policies" / "random")  # what `simrec resume` does first
    if (run_dir / "policies" / "random" / "checkpoint.json").is_file():
        assert not read_table(run_dir / "policies" / "random", "pages").empty
    if command == "validate":  # `simrec resume` continues a validate run as one, to its end
        with FaultServer(FaultPlan(latency_s=0.05), responder=prose) as server:
            env = {**_child_env(), "OPENAI_BASE_URL": server.base_url}
            data = json.loads((run_dir / "experiment.json").read_text())
            data["llm"]["base_url"] = [server.base_url]  # the new server's port (the config check compares it)
            (run_dir / "experiment.json").write_text(json.dumps(data))
            done = subprocess.run([sys.executable, "-m", "experiments.cli", "resume", str(run_dir)], env=env,
                                  capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (run_dir / "validity.json").is_file()
