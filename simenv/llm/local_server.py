"""A real OpenAI-compatible server on loopback: `python -m llama_cpp.server` serving the embedded SmolLM2.

For tests and benchmarks that exercise the real `openai` client end to end (no network beyond 127.0.0.1).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    """A loopback port nobody listens on at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_models(base_url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    """Poll `GET {base_url}/models` until it answers 200; an early exit or the timeout is a RuntimeError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"llama_cpp.server at {base_url} not ready after {timeout_s} s")


@contextmanager
def llama_server(timeout_s: float = 120.0) -> Iterator[str]:
    """Base URL (`http://127.0.0.1:<port>/v1`) of a llama.cpp server serving SmolLM2-135M, stopped afterwards."""
    from simenv.llm.llama_cpp_backend import smollm2_gguf_path

    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()),
           "--model_alias", "smollm2-135m", "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", "2048", "--n_threads", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for_models(base_url, proc, timeout_s)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
