"""Simulated-user benchmarks: speed of the persona pipeline and the fast user, and the fidelity table.

python -m benchmarks.bench_agents                 # pages/s, LLM calls and tokens per page (one core)
python -m benchmarks.bench_agents --fidelity      # discrimination + rating fidelity per configuration,
                                                  # SmolLM2 on a small persona subset, circularity check
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, before numpy loads
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from agents.config import load_user  # noqa: E402
from agents.decision import GroundedDecider, ItemVectors  # noqa: E402
from agents.embedding import CachedEmbedder, HashingEmbedder, MiniLMEmbedder  # noqa: E402
from agents.fidelity import discrimination, rating_fidelity  # noqa: E402
from agents.llm_user import LLMUserModel  # noqa: E402
from agents.persona import build_personas  # noqa: E402
from agents.signals import CollabPrior, TrainStats, sigmoid  # noqa: E402
from agents.silent_user import SilentUserModel  # noqa: E402
from simenv.data.loaders import load_dataset  # noqa: E402
from simenv.data.splits import agent4rec_split  # noqa: E402
from simenv.llm.mock import MockLLM  # noqa: E402
from simenv.records import Page  # noqa: E402

AGENT4REC = "Agent4Rec (gpt-3.5): 1:1 acc 0.6912 F1 0.6982; 1:9 acc 0.6175 F1 0.3232"
CACHE = Path(".cache")
RESEARCH = Path(__file__).parent / "configs" / "research_users.toml"  # the research kinds (genre, collab, ...)


class CountingLLM:
    """Counts calls per template and keeps (request, response) samples for token counting."""

    name = "counting"

    def __init__(self, inner, keep: int = 200) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}
        self.samples: list = []
        self.keep = keep

    def _note(self, requests, responses):
        for q, r in zip(requests, responses, strict=True):
            self.calls[q.template] = self.calls.get(q.template, 0) + 1
            if q.template == "page_decision" and len(self.samples) < self.keep:
                self.samples.append((q, r))

    def complete(self, request):
        response = self.inner.complete(request)
        self._note([request], [response])
        return response

    def complete_batch(self, requests):
        responses = self.inner.complete_batch(requests)
        self._note(requests, responses)
        return responses


def smollm2_tokenizer():
    """SmolLM2's own tokenizer (vocab only, no weights in use), or None if llama-cpp is missing."""
    try:
        from llama_cpp import Llama

        from simenv.llm.llama_cpp_backend import smollm2_gguf_path
    except ImportError:
        return None
    return Llama(model_path=str(smollm2_gguf_path()), vocab_only=True, verbose=False)


def bench_speed(n_pages: int, batch: int) -> None:
    ds = load_dataset("ml-100k")
    split = agent4rec_split(ds, n_users=300, seed=0)
    personas = list(build_personas(split).values())
    cfg = load_user("handset").user
    llm = CountingLLM(MockLLM(seed=0))
    model = LLMUserModel(ds, llm, HashingEmbedder(64), cfg, train=split.train)
    model.decider.prepare(personas)
    rng = np.random.default_rng(0)
    catalog = ds.catalog

    def run(total: int) -> tuple[int, int]:
        done = episodes = 0
        queue = iter(range(10**9))
        sessions = [model.start_session(personas[next(queue) % len(personas)], 0, rng) for _ in range(batch)]
        while done < total:
            pages = []
            for s in sessions:
                ids = tuple(int(i) for i in rng.choice(ds.n_items, 4, replace=False))
                pages.append((Page(s.episode, len(s.pages), ids), [catalog[i] for i in ids]))
            model.react_batch(sessions, pages)
            done += len(sessions)
            for k, s in enumerate(sessions):
                if s.left or len(s.pages) >= 5:
                    s.interview()
                    episodes += 1
                    sessions[k] = model.start_session(personas[next(queue) % len(personas)], s.episode + 1, rng)
        return done, episodes

    import simenv.llm.structured as structured

    validate, spent = structured.validate_answer, [0.0]

    def timed_validate(*args, **kwargs):  # measures the structured layer's JSON-schema validation share
        t0 = time.process_time()
        try:
            return validate(*args, **kwargs)
        finally:
            spent[0] += time.process_time() - t0

    structured.validate_answer = timed_validate
    run(batch * 5)  # warm up: plans, templates, caches
    llm.calls.clear()
    spent[0] = 0.0
    start, cpu = time.perf_counter(), time.process_time()
    pages, episodes = run(n_pages)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    structured.validate_answer = validate
    per_page = (llm.calls.get("page_decision", 0) + llm.calls.get("reflection", 0)) / pages
    with_interview = sum(llm.calls.values()) / pages
    print(f"LLM persona pipeline (mock LLM, hashing embedder, ML-100K personas, 4 items/page, batch {batch}):")
    print(
        f"  {pages} pages in {elapsed:.2f} s wall = {pages / elapsed:,.0f} pages/s; "
        f"{cpu:.2f} s CPU = {pages / cpu:,.0f} pages/s per core (all in one thread)"
    )
    rest = cpu - spent[0]
    print(
        f"  of which answer validation (simenv.llm.structured) {spent[0]:.2f} s CPU; "
        f"everything else {rest:.2f} s = {pages / rest:,.0f} pages/s per core"
    )
    print(f"  LLM calls per page: {per_page:.3f} (page + reflection), {with_interview:.3f} incl. the exit interview")
    print(f"  calls by template: {dict(sorted(llm.calls.items()))}; {episodes} episodes")
    tok = smollm2_tokenizer()
    if tok is not None and llm.samples:

        def count(text: str) -> int:
            return len(tok.tokenize(text.encode(), add_bos=False))

        prompt = [sum(count(m.content) + 5 for m in q.messages) for q, _ in llm.samples]
        answer = [len(tok.tokenize(r.text.encode(), add_bos=False)) for _, r in llm.samples]
        total = np.array(prompt) + np.array(answer)
        print(
            f"  tokens per page (SmolLM2 tokenizer, {len(total)} pages): prompt {np.mean(prompt):.0f} + answer "
            f"{np.mean(answer):.0f} = {total.mean():.0f} mean, {total.max()} max"
        )
    decider = GroundedDecider(ds, split.train, load_user("handset").decision, embedder=HashingEmbedder(64))
    silent = SilentUserModel(decider, personas)
    sessions = [silent.start_session(p, 0, np.random.default_rng(i)) for i, p in enumerate(personas)]
    pages_list = [Page(0, t % 5, tuple(int(i) for i in rng.choice(ds.n_items, 4, replace=False))) for t in range(5000)]
    n = 100_000
    start, cpu = time.perf_counter(), time.process_time()
    for k in range(n):
        sessions[k % len(sessions)].react(pages_list[k % len(pages_list)])
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(
        f"Silent (no-text) user, handset kind: {n} page decisions in {elapsed:.2f} s wall = "
        f"{n / elapsed:,.0f} pages/s; "
        f"{cpu:.2f} s CPU = {n / cpu:,.0f} pages/s per core"
    )


# ---------------------------------------------------------------------------------------------------------------
def pure_svd_scores(train, n_users: int, n_items: int, k: int = 32) -> np.ndarray:
    """A quick MF for the circularity check: PureSVD (truncated SVD of the binary train matrix)."""
    x = np.zeros((n_users, n_items), dtype=np.float32)
    x[train["user_id"].to_numpy(), train["item_id"].to_numpy()] = 1.0
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    return (u[:, :k] * s[:k]) @ vt[:k]


def circularity(ds, split, personas, deciders: dict[str, GroundedDecider], k: int = 20) -> None:
    """Does the collaborative prior make MF look better (relative to Pop) than the real held-out data says?"""
    train = split.train
    mf = pure_svd_scores(train, ds.n_users, ds.n_items)
    pop = np.bincount(train["item_id"], minlength=ds.n_items).astype(float)
    test = split.test.groupby("user_id")["item_id"].apply(set).to_dict()
    real = {"mf": [], "pop": []}
    sim = {name: {"mf": [], "pop": []} for name in deciders}
    for p in personas:
        seen = np.asarray(p.train_items)
        for name_r, scores in (("mf", mf[p.user_id].copy()), ("pop", pop.copy())):
            scores[seen] = -np.inf
            top = np.argpartition(-scores, k)[:k]
            real[name_r].append(len(test.get(p.user_id, set()) & set(top.tolist())) / k)
            for name, dec in deciders.items():
                logits = dec.plan(p).base_logit[top].astype(float)
                sim[name][name_r].append((float(sigmoid(logits).mean()), float(logits.mean())))
    r_mf, r_pop = np.mean(real["mf"]), np.mean(real["pop"])
    print(f"  circularity (top-{k} unseen items, {len(personas)} personas):")
    print(f"    real held-out hit rate    MF {r_mf:.4f}  Pop {r_pop:.4f}  MF/Pop {r_mf / r_pop:.2f}")
    r_win = np.mean(np.array(real["mf"]) > np.array(real["pop"])) - np.mean(
        np.array(real["mf"]) < np.array(real["pop"])
    )
    print(f"    real: MF wins minus Pop wins over personas {r_win:+.3f}")
    for name in deciders:
        mf, pop_ = np.array(sim[name]["mf"]), np.array(sim[name]["pop"])
        s_mf, s_pop = mf[:, 0].mean(), pop_[:, 0].mean()
        gap = mf[:, 1].mean() - pop_[:, 1].mean()
        win = np.mean(mf[:, 1] > pop_[:, 1]) - np.mean(mf[:, 1] < pop_[:, 1])
        print(
            f"    simulated {name:<18} P(watch) MF {s_mf:.4f} Pop {s_pop:.4f} MF/Pop {s_mf / s_pop:.2f}; "
            f"mean logit MF-Pop {gap:+.3f}; MF wins minus Pop wins {win:+.3f}"
        )


def fmt(d, r) -> str:
    cells = " ".join(f"{d[m].accuracy:.3f}/{d[m].f1:.3f}" for m in sorted(d))
    told = " ".join(f"{d[m].protocol.accuracy:.3f}" if d[m].protocol else "n/a" for m in sorted(d))
    return f"{cells}  protocol acc {told}  RMSE {r.rmse:.3f} (stars {r.rmse_stars:.3f})  KL {r.kl:.4f}"


def bench_fidelity(
    datasets: list[str], n_personas: int, llm_personas: int, heldout: str, circularity_only: bool = False
) -> None:
    emb = CachedEmbedder(MiniLMEmbedder(), CACHE / "embeddings")
    base = load_user("handset").user
    print(f"Fidelity (held-out = {heldout}; acc/F1 per ratio 1:1 1:2 1:3 1:9; pooled counts). {AGENT4REC}")
    for name in datasets:
        ds = load_dataset(name)
        split = agent4rec_split(ds, n_users=1000 if name == "ml-1m" else 500, seed=0)
        personas = list(build_personas(split).values())[:n_personas]
        iv = ItemVectors(ds, emb)
        iv.all()
        stats = TrainStats.from_train(ds, split.train)
        collab = CollabPrior.from_train(split.train, ds.n_users, ds.n_items)
        print(f"\n{name}: {len(personas)} personas, {ds.n_items} items, train {len(split.train)} ratings")
        deciders = {}
        for prof in ("genre", "embedding", "collab", "popularity", "handset", "handset-nocollab"):
            cfg = load_user(prof, RESEARCH if prof != "handset" else None).decision
            if cfg.w_llm or cfg.rating_llm:  # measured with the LLM below; here the signals alone
                cfg = replace(cfg, w_llm=0.0, rating_llm=0.0, name=f"{prof}(w_llm=0)")
            dec = GroundedDecider(ds, split.train, cfg, embedder=emb, item_vectors=iv, stats=stats, collab=collab)
            dec.prepare(personas)
            deciders[prof] = dec
            if circularity_only:
                continue
            d = discrimination(dec, split, personas, np.random.default_rng(0), heldout=heldout)
            r = rating_fidelity(dec, split, personas, np.random.default_rng(0), heldout=heldout)
            print(f"  {cfg.name:<24} {fmt(d, r)}", flush=True)
        if circularity_only:
            circularity(ds, split, personas, {k: deciders[k] for k in ("handset", "handset-nocollab")})
            continue
        circularity(ds, split, personas, {k: deciders[k] for k in ("handset", "handset-nocollab")})
        if llm_personas:
            bench_llm_fidelity(ds, split, personas[:llm_personas], emb, iv, stats, collab, base, heldout)


def bench_llm_fidelity(ds, split, personas, emb, iv, stats, collab, base, heldout) -> None:
    """SmolLM2 (llama-cpp, answers cached on disk) for llm-only and grounded with several LLM weights."""
    from simenv.llm import LLMConfig, make_llm

    llm = make_llm(LLMConfig(backend="llama-cpp", cache_dir=str(CACHE / "llm-fidelity")))
    ratios, n_pos = (1, 9), 2
    print(f"  SmolLM2-135M on {len(personas)} personas (ratios 1:1 and 1:9, {n_pos} positives each):", flush=True)
    grounded = load_user("handset").decision
    configs = [load_user("llm-only").decision] + [
        replace(grounded, w_llm=w, name=f"grounded w_llm={w}") for w in (0.0, 0.5, 1.0, 2.0)
    ]
    for cfg in configs:
        dec = GroundedDecider(ds, split.train, cfg, embedder=emb, item_vectors=iv, stats=stats, collab=collab)
        model = LLMUserModel(ds, llm, emb, replace(base, decision=cfg), train=split.train, decider=dec)
        start = time.perf_counter()
        d = discrimination(model, split, personas, np.random.default_rng(0), ratios, n_pos, heldout=heldout)
        r = rating_fidelity(model, split, personas, np.random.default_rng(0), n_per_persona=4, heldout=heldout)
        fallbacks = sum(e.kind == "fallback" for e in model.events)
        print(f"    {cfg.name:<22} {fmt(d, r)}  fallbacks {fallbacks}  {time.perf_counter() - start:.0f}s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fidelity", action="store_true")
    ap.add_argument("--pages", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m"])
    ap.add_argument("--personas", type=int, default=300)
    ap.add_argument("--llm-personas", type=int, default=0)
    ap.add_argument("--heldout", choices=("test", "valid"), default="test")
    ap.add_argument("--circularity-only", action="store_true", help="skip the fidelity table")
    args = ap.parse_args()
    if args.fidelity:
        bench_fidelity(args.datasets, args.personas, args.llm_personas, args.heldout, args.circularity_only)
    else:
        bench_speed(args.pages, args.batch)


if __name__ == "__main__":
    main()
