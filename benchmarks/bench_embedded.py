"""Embedded SmolLM2 on the product's own requests: seconds per call for the page prompts the persona user sends.

Run: `.venv/bin/python -m benchmarks.bench_embedded [--personas 6] [--pages 4]`. Prints one line per (weights
format, template). ML-100K personas browse the most popular movies (so pages have something watched) in batches,
as `simrec compare` runs them: page 1 of every persona, then page 2, ... so consecutive calls switch persona and
only the RAM prefix cache keeps a persona's prompt warm. "first" = a persona's first call (its system prompt is
new); "later" = its later pages (system prefix restored from the cache, the page suffix evaluated).
- page_reaction: the default grounded profile (narrate mode; what `make demo` sends).
- page_decision: the `llm-only` profile (the LLM answers watch/rating/leave for every item).
Formats: "source" (the shipped Q4_1 file) and "f16" (the cached local re-encoding, the default).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
from collections import defaultdict  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402

from agents.config import load_user  # noqa: E402
from agents.embedding import HashingEmbedder  # noqa: E402
from agents.llm_user import LLMUserModel  # noqa: E402
from agents.persona import build_personas  # noqa: E402
from simenv.data.loaders import load_dataset  # noqa: E402
from simenv.data.splits import agent4rec_split  # noqa: E402
from simenv.llm.llama_cpp_backend import LlamaCppBackend  # noqa: E402
from simenv.llm.wrapper import LLMWrapper  # noqa: E402
from simenv.records import Page  # noqa: E402


class Timed(LLMWrapper):
    """Keeps (template, persona system prompt, latency, prompt tokens, completion tokens, JSON ok) per call."""

    label = "timed"

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.rows: list[tuple[str, str, float, int, int, bool]] = []

    def complete(self, request):
        return self.complete_batch([request])[0]

    def complete_batch(self, requests):
        out = self.inner.complete_batch(requests)
        for q, r in zip(requests, out, strict=True):
            ok = r.parsed is not None
            self.rows.append((q.template, q.messages[0].content, r.latency_s, r.prompt_tokens, r.completion_tokens, ok))
        return out


def run(fmt: str, profile: str, n_personas: int, n_pages: int, page_size: int) -> list[tuple]:
    ds = load_dataset("ml-100k")
    split = agent4rec_split(ds, n_users=200, seed=0)
    personas = list(build_personas(split).values())[:n_personas]
    popular = np.argsort(-np.bincount(split.train["item_id"].to_numpy(), minlength=ds.n_items))[:200]
    llm = Timed(LlamaCppBackend(gguf_format=fmt))
    config = replace(load_user(profile).user, page_prompt="auto")
    model = LLMUserModel(ds, llm, HashingEmbedder(64), config, train=split.train)
    rng = np.random.default_rng(0)
    sessions = [model.start_session(p, 0, np.random.default_rng(i)) for i, p in enumerate(personas)]
    for t in range(n_pages):
        live = [s for s in sessions if not s.left]
        if not live:
            break
        pages = []
        for s in live:
            ids = tuple(int(i) for i in rng.choice(popular, page_size, replace=False))
            pages.append((Page(s.persona.user_id, t, ids), [ds.catalog[i] for i in ids]))
        model.react_batch(live, pages)
    model.interview_batch(sessions)
    llm.close()
    return llm.rows


def summarise(fmt: str, rows: list[tuple]) -> None:
    seen: set[str] = set()
    groups: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for template, system, latency, prompt, completion, ok in rows:
        phase = "later" if system in seen else "first"
        seen.add(system)
        groups[(template, phase)].append((latency, prompt, completion, ok))
    for (template, phase), values in sorted(groups.items()):
        lat = [v[0] for v in values]
        prompt, answer = statistics.mean(v[1] for v in values), statistics.mean(v[2] for v in values)
        print(
            f"{fmt:>6} {template:<14} {phase:<5} n={len(values):>3}  prompt {prompt:5.0f} tok, answer {answer:4.1f} "
            f"tok: median {statistics.median(lat):.2f} s, "
            f"mean {statistics.mean(lat):.2f} s; unparseable {sum(not v[3] for v in values)}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", type=int, default=6)
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--page-size", type=int, default=4)
    parser.add_argument("--formats", default="source,f16")
    parser.add_argument("--profiles", default="grounded,llm-only")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")
    for profile in args.profiles.split(","):
        for fmt in args.formats.split(","):
            summarise(fmt, run(fmt, profile, args.personas, args.pages, args.page_size))


if __name__ == "__main__":
    main()
