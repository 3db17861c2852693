"""Checks a command runs before any work or any write: every name a registry resolves, backend requirements,
the output directory. Each failure is a `ConfigError` naming the config field and the offending value, so a
typo in the last recommender of a list fails in a second instead of after the first policies have run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from experiments.config import CONFIG_DIR, ConfigError, ExperimentConfig
from experiments.errors import EndpointUnreachable
from experiments.model_cache import check_caches
from simenv.llm.secrets import redact_urls, shown, url_userinfo

log = logging.getLogger(__name__)
# Answers that mean the config is wrong (key, model, address): the run would be nothing but fallbacks.
FATAL_PROBE_ERRORS = {
    "http_401": "rejected the API key (HTTP 401; set OPENAI_API_KEY)",
    "http_403": "refused access (HTTP 403; check OPENAI_API_KEY and the model's permissions)",
    "http_404": "does not serve model {model!r} at this address (HTTP 404; check --llm.model and --llm.base-url)",
    "connection": "cannot be reached (connection failed: {detail})",
}

SPEC_CHARS = ":=/"  # a recommender spec that is not a plain registry name (import path, file:, URL, LABEL=)


def check_recommender_name(field: str, name: str) -> None:
    """A plain registry name must be registered; specs (`file:...`, `pkg.mod:Class`, URLs) are checked later."""
    from recommenders import registry

    if any(c in name for c in SPEC_CHARS):
        return
    if name not in registry.REGISTRY:
        known = ", ".join(sorted(registry.REGISTRY))
        raise ConfigError(f"[{field}] unknown recommender {shown(name)} (known: {known})")


def check_llm(config: ExperimentConfig) -> None:
    """Backend requirements: openai needs a model and an http(s) base URL; local model paths must exist."""
    section = config.llm
    if section.backend == "openai":
        if not section.model:
            raise ConfigError("[llm.model] is required with --llm.backend openai (e.g. --llm.model gpt-4o-mini)")
        urls = section.base_url or os.environ.get("OPENAI_BASE_URL") or ()  # one, a tuple or a comma-separated list
        for url in (p.strip() for u in ([urls] if isinstance(urls, str) else urls) for p in u.split(",")):
            if url_userinfo(url):
                raise ConfigError(
                    "[llm.base_url] credentials in the URL (user:password@host) are not accepted; "
                    "give the key in OPENAI_API_KEY"
                )
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"[llm.base_url] not an http(s) URL: {shown(url)}")
    elif section.backend in ("llama-cpp", "transformers") and section.model:
        path = Path(section.model).expanduser()
        if not path.exists():
            raise ConfigError(f"[llm.model] no such model file or directory for {section.backend}: {shown(str(path))}")


def check_endpoint(config: ExperimentConfig) -> None:
    """openai backend: one minimal request to every endpoint (`OpenAIBackend.probe`). A wrong key (401/403), an
    unknown model or path (404) or an address nobody answers at raises `EndpointUnreachable` (exit 1) naming the
    endpoint (userinfo and query string redacted; the key is never in it); any other error (a 5xx, a 429, a
    timeout after the retries) is one warning line and the run goes on (its fallback limit guards it)."""
    if config.llm.backend != "openai":
        return
    from experiments.build import llm_config
    from simenv.llm.factory import make_backend
    from simenv.llm.openai_backend import OpenAIBackend

    backend = make_backend(llm_config(config))
    assert isinstance(backend, OpenAIBackend)
    try:
        results = backend.probe()
    finally:
        backend.close()
    for url, error in results:
        if error is None:
            continue
        where = redact_urls(url or "the SDK's default endpoint (https://api.openai.com/v1)")
        template = FATAL_PROBE_ERRORS.get(error.kind)
        if template is not None:
            what = template.format(model=backend.model, detail=redact_urls(error.detail)[:160])
            raise EndpointUnreachable(f"LLM endpoint {where} {what}")
        log.warning("LLM endpoint %s: pre-flight request failed (%s); running anyway", where, redact_urls(str(error)))


def check_sizes(config: ExperimentConfig, world: Any, requested: int | None = None) -> None:
    """Page sizes against the catalog and every persona's candidates (the items it has not rated in train): a
    session that never leaves shows `pages x page_size` distinct items, so that many must be there for every
    persona, or the run would fail on its last pages. Fewer personas than requested: one warning line (the count
    the run uses is in each policy's config.json, `n_episodes`)."""
    pages, size = config.simulation.pages, config.simulation.page_size
    n_items = world.dataset.n_items
    if size > n_items:
        raise ConfigError(f"[simulation.page_size] {size} exceeds the catalog's {n_items} items")
    need = pages * size
    fewest = min(world.personas.values(), key=lambda p: n_items - len(set(p.train_items)), default=None)
    if fewest is not None:
        candidates = n_items - len(set(fewest.train_items))
        if need > candidates:
            raise ConfigError(
                f"[simulation.pages] x [simulation.page_size] = {pages} x {size} = {need} items per session, but "
                f"persona {fewest.user_id} has only {candidates} candidates ({n_items} items minus its "
                f"{n_items - candidates} train ratings); lower --simulation.pages or --simulation.page-size"
            )
    requested = config.data.n_personas if requested is None else requested
    if requested > len(world.personas):
        log.warning(
            "%d personas requested, %d available (the split's users): running %d",
            requested,
            len(world.personas),
            len(world.personas),
        )


def check_recommenders_file(config: ExperimentConfig) -> None:
    name = config.recommenders.config_file
    if name is None:
        return
    if not Path(name).is_file() and not (CONFIG_DIR / Path(name).name).is_file():
        raise ConfigError(f"[recommenders.config_file] file not found: {shown(str(name))}")


def check_out_dir(run_dir: Path, marker: str, resume: bool = False) -> None:
    """The run directory must be creatable and must not already hold a run (unless resuming)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"[run.out_dir/run.name] {run_dir} exists and is not a directory")
    if not resume and (run_dir / marker).exists():
        hint = f"`simrec resume {run_dir}` to continue it, or set --run.name" if marker == "experiment.json" else ""
        raise ConfigError(f"{run_dir} already holds a run ({marker}): {hint or 'set --run.name'}")
    parent = run_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"[run.out_dir] cannot create {run_dir}: {parent} is not a writable directory")


def preflight(
    config: ExperimentConfig,
    *,
    recommenders: tuple[str, ...] = (),
    needs_llm: bool = False,
    run_dir: Path | None = None,
    marker: str = "experiment.json",
    resume: bool = False,
    probe: bool = True,
) -> None:
    """Every check a command needs, cheapest first; raises the first ConfigError (the endpoint's pre-flight
    request, last, raises `EndpointUnreachable`)."""
    for name in recommenders:
        check_recommender_name("recommenders.names", name)
    check_recommenders_file(config)
    if needs_llm or config.llm.backend != "mock":  # a backend named but unusable is an error even if unused
        check_llm(config)
    if run_dir is not None:
        check_out_dir(run_dir, marker, resume)
    check_caches(config)
    if needs_llm and probe:
        check_endpoint(config)
