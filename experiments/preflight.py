"""Checks a command runs before any work or any write: every name a registry resolves, backend requirements,
the output directory. Each failure is a `ConfigError` naming the config field and the offending value, so a
typo in the last recommender of a list fails in a second instead of after the first policies have run.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from experiments.config import CONFIG_DIR, ConfigError, ExperimentConfig
from simenv.llm.secrets import shown

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
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"[llm.base_url] not an http(s) URL: {shown(url)}")
    elif section.backend in ("llama-cpp", "transformers") and section.model:
        path = Path(section.model).expanduser()
        if not path.exists():
            raise ConfigError(f"[llm.model] no such model file or directory for {section.backend}: {shown(str(path))}")


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
) -> None:
    """Every check a command needs, cheapest first; raises the first ConfigError."""
    for name in recommenders:
        check_recommender_name("recommenders.names", name)
    check_recommenders_file(config)
    if needs_llm or config.llm.backend != "mock":  # a backend named but unusable is an error even if unused
        check_llm(config)
    if run_dir is not None:
        check_out_dir(run_dir, marker, resume)
