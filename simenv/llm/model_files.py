"""Local re-encodings of a GGUF model (e.g. the shipped SmolLM2 Q4_1 as F16), made once with llama.cpp's own
quantizer and cached: nothing is downloaded, the source file stays the only model that comes from a package.

Why: on these 2-core AVX2 machines llama.cpp evaluates prompts much faster from F16 or Q8_0 weights than from
Q4_1 (no repacked Q4_1 kernel), and persona prompts are long while answers are short. F16 holds every Q4_1 weight
(4-bit code x fp16 scale + fp16 min) to fp16 precision, so the model's answers barely change; the figures are in
`benchmarks/bench_llm.py` and the README.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from simenv.data.cache import cache_root, mark_used

logger = logging.getLogger(__name__)

FORMATS = ("source", "f16", "q8_0")


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Path]:
    """Send file descriptor 2 to a temporary file meanwhile: llama.cpp logs one line per tensor while it
    converts (270 lines), which would bury a run's output; the caller shows the tail only on failure."""
    with tempfile.TemporaryDirectory() as tmp_dir:
        path = Path(tmp_dir) / "llama.log"
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with path.open("wb") as fh:
                os.dup2(fh.fileno(), 2)
                try:
                    yield path
                finally:
                    os.dup2(saved, 2)
        finally:
            os.close(saved)


@functools.lru_cache(maxsize=8)
def _content_key(path: str, size: int, mtime_ns: int) -> str:
    """The first 16 hex digits of the file's SHA-256 (~0.2 s for SmolLM2's 98 MB; once per process and file
    version). Not size and mtime: every fresh install of the package gives the same file a new mtime, and such a
    key made a new 271 MB F16 copy per virtualenv."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()[:16]


def converted_gguf(source: str | Path, fmt: str, cache_dir: str | Path | None = None) -> Path:
    """`source` re-encoded as `fmt` ("f16" or "q8_0"; "source" returns it unchanged), cached under
    `<cache root>/models/` keyed by the source's name and content, written atomically. Writing a new one removes
    the same name and format's entries under other keys (older versions of the source): the cache keeps one."""
    source = Path(source)
    if fmt not in FORMATS:
        raise ValueError(f"GGUF format {fmt!r} is not one of {list(FORMATS)}")
    if not source.is_file():
        raise FileNotFoundError(f"GGUF model file {source} does not exist")
    if fmt == "source":
        return source
    stat = source.stat()
    target_dir = cache_root(cache_dir) / "models"
    key = _content_key(str(source.resolve()), stat.st_size, stat.st_mtime_ns)
    target = target_dir / f"{source.stem}.{fmt.upper()}-{key}.gguf"
    if target.is_file():
        mark_used(target)
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    import llama_cpp  # lazy: heavy, and only needed the first time

    ftype = {"f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}[fmt]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = max(1, min(2, os.cpu_count() or 1))
    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        logger.info("converting %s to %s (once; cached at %s)", source.name, fmt.upper(), target)
        with _captured_stderr() as log:
            rc = llama_cpp.llama_model_quantize(str(source).encode(), tmp.encode(), ctypes.byref(params))
        if rc != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
            raise RuntimeError(f"llama.cpp could not convert {source} to {fmt} (return code {rc}):\n{tail}")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is an ordinary user cache
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    for stale in target_dir.glob(f"{source.stem}.{fmt.upper()}-*.gguf"):
        if stale != target:  # a process still reading one keeps its open file (POSIX unlink)
            logger.info("removing %s: a re-encoding of another version of %s", stale.name, source.name)
            stale.unlink(missing_ok=True)
    return target
