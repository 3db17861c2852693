"""Recommender specs: everything `--recommenders.names` and `simrec check-recommender SPEC` accept.

    mf                                   a registry name (random, pop, pop-head, mf, multvae, lightgcn, ...)
    mypkg.models:MyRecommender           an import path to any class meeting the Recommender protocol
    file:rankings.csv                    a ranking file (parquet/CSV/TSV: user_id, item_id, score | rank)
    file:rankings.csv?ids=dense&fallback=random
    http://127.0.0.1:8000/recommend      a recommender service (JSON contract: recommenders.http_client)

Any spec may start with `LABEL=` (e.g. `mine=file:out/rank.csv`): the policy name in the logs, the table and
the run directory. Without one the label is the registry name, the class name, `file-<stem>` or
`http-<host>-<port>`. Settings come from the recommenders config file (`--recommenders.config-file`,
default recommenders.toml) under `[models.<label>]`: constructor keywords for a class, `ids` / `fallback`
for a file (also as `?key=value` after the path), `ids`, `fallback`, `timeout_s`, `max_retries`,
`backoff_s`, `concurrency` for a service.

`check_recommender_specs(config, world)` resolves and checks every spec of a run before any simulation
starts: a missing module or class, a class lacking protocol methods (named), unknown settings, a ranking
file's columns or unknown ids (with a sample), a service's HTTP status on one probe request. Each error is
a `SpecError` (a `ConfigError`: the CLI prints it on one line) naming the spec.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from experiments.config import ConfigError, ExperimentConfig
from experiments.model_cache import model_dir, recommender_settings
from experiments.world import World
from recommenders import registry
from recommenders.conformance import missing_methods
from recommenders.external import IdMap
from recommenders.http_client import HTTPRecommender, HTTPRecommenderError
from recommenders.ranking_file import RankingFileError, RankingFileRecommender, read_ranking_file
from simenv.data.cache import mark_used
from simenv.llm import LLM
from simenv.protocols import Recommender

log = logging.getLogger(__name__)

LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
SPEC_MARKER = "spec.json"  # written after a plugin's save() succeeded: the cache entry is complete
INJECTABLE = ("dataset", "llm")  # constructor / load keywords a plugin may declare to receive these


class SpecError(ConfigError):
    """A recommender spec cannot be used; the message names the spec and what is wrong."""


@dataclass(frozen=True)
class RecommenderSpec:
    """A parsed spec: `kind` is registry | import | file | http; `target` the name, import path, file path
    or URL; `options` the `?key=value` pairs of a file spec."""

    text: str
    label: str
    kind: str
    target: str
    options: tuple[tuple[str, str], ...] = ()

    def fail(self, what: str) -> SpecError:
        return SpecError(f"recommender {self.text!r}: {what}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def parse_spec(text: str) -> RecommenderSpec:
    """Parse one spec string (syntax only: nothing is imported, read or requested)."""
    raw = text.strip()
    label = None
    head, sep, rest = raw.partition("=")
    if sep and LABEL.fullmatch(head):
        label, raw = head, rest.strip()
        if label in registry.REGISTRY and raw != label:
            raise SpecError(f"recommender {text!r}: the label {label!r} is a registry name; choose another")
    if raw in registry.REGISTRY:
        return RecommenderSpec(text, label or raw, "registry", raw)
    if raw.startswith("file:"):
        path, _, query = raw[len("file:") :].partition("?")
        if not path:
            raise SpecError(f"recommender {text!r}: file: needs a path, e.g. file:rankings.csv")
        options = tuple(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else ()
        return RecommenderSpec(text, label or f"file-{_slug(Path(path).stem)}", "file", path, options)
    if raw.startswith(("http://", "https://")):
        parts = urlsplit(raw)
        if not parts.hostname:
            raise SpecError(f"recommender {text!r}: the URL has no host")
        default = f"http-{_slug(parts.hostname)}" + (f"-{parts.port}" if parts.port else "")
        return RecommenderSpec(text, label or default, "http", raw)
    if IMPORT_PATH.fullmatch(raw):
        return RecommenderSpec(text, label or raw.rsplit(":", 1)[1], "import", raw)
    raise SpecError(
        f"recommender {text!r}: not a registry name ({', '.join(sorted(registry.REGISTRY))}), an import path "
        "package.module:ClassName, file:PATH or an http(s):// URL"
    )


def parse_specs(names: tuple[str, ...] | list[str]) -> list[RecommenderSpec]:
    """Parse a run's specs; policy labels must be distinct."""
    specs = [parse_spec(n) for n in names]
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.label in seen:
            raise SpecError(
                f"recommenders {seen[spec.label]!r} and {spec.text!r} both have the policy name {spec.label!r}; "
                "give one a label: NAME=SPEC"
            )
        seen[spec.label] = spec.text
    return specs


def find_spec(config: ExperimentConfig, name: str) -> RecommenderSpec:
    """`name` is the label of one of the run's specs, or a spec itself."""
    for spec in parse_specs(config.recommenders.names):
        if spec.label == name:
            return spec
    return parse_spec(name)


# ---- import paths -------------------------------------------------------------------------------------
def import_class(spec: RecommenderSpec) -> type:
    """The class an import-path spec names, checked against the Recommender protocol."""
    module_name, class_name = spec.target.rsplit(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise spec.fail(
                f"module {module_name!r} not found (is it on PYTHONPATH? sys.path[0] is {sys.path[0]!r})"
            ) from None
        raise spec.fail(f"importing module {module_name!r} failed: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any error inside the user's module is reported with the spec
        raise spec.fail(f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise spec.fail(f"module {module_name!r} has no attribute {class_name!r}")
    if not isinstance(cls, type):
        raise spec.fail(f"{spec.target} is a {type(cls).__name__}, not a class")
    missing = missing_methods(cls)
    if missing:
        raise spec.fail(f"class {class_name} does not satisfy the Recommender protocol: missing {', '.join(missing)}")
    return cls


def accepted_kwargs(fn: Any, available: dict[str, Any]) -> dict[str, Any]:
    """The entries of `available` that `fn` declares as parameters."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in available.items() if k in params and v is not None}


def _source_digest(cls: type) -> str:
    """Hash of the source of `cls` and of its base classes defined in the same module, so editing a plugin class
    retrains it instead of loading a stale cache, while editing another class of the same file does not (a
    module-level helper the class calls is not covered: edit the class or clear the cache). Falls back to the
    whole file's hash when the source cannot be read."""
    digest = hashlib.sha256()
    try:
        for klass in cls.__mro__:
            if klass.__module__ == cls.__module__:
                digest.update(inspect.getsource(klass).encode())
        return digest.hexdigest()[:16]
    except (TypeError, OSError):
        pass
    try:
        return hashlib.sha256(Path(inspect.getfile(cls)).read_bytes()).hexdigest()[:16]
    except (TypeError, OSError):
        return "unknown"


def _build_plugin(spec: RecommenderSpec, cls: type, settings: dict[str, Any], inject: dict[str, Any]) -> Any:
    kwargs = {**accepted_kwargs(cls, inject), **settings}
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise spec.fail(f"settings {sorted(settings)} do not fit {cls.__name__}(): {exc}") from None
    except ValueError:
        pass  # no signature to check: let the call below report
    try:
        return cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a constructor error is a spec error
        raise spec.fail(f"{cls.__name__}(**{settings}) failed: {type(exc).__name__}: {exc}") from None


def train_plugin(
    config: ExperimentConfig, world: World, spec: RecommenderSpec, llm: LLM | None, overrides: dict[str, Any]
) -> tuple[Recommender, float]:
    """Fit a plugin class on the train split (all its columns: user_id, item_id, rating, timestamp) through the
    model cache (keyed by spec, settings, data, seed and the class's own source); a class whose save raises
    NotImplementedError is simply not cached."""
    cls = import_class(spec)
    settings = recommender_settings(config, spec.label) | overrides
    inject = {"dataset": world.dataset, "llm": llm}
    path, key_data = model_dir(
        config, world, spec.label, spec=spec.target, settings=settings, source=_source_digest(cls)
    )
    if (path / SPEC_MARKER).is_file():
        try:
            loaded = cls.load(path, **accepted_kwargs(cls.load, inject))
            mark_used(path)
            return loaded, 0.0
        except Exception as exc:  # noqa: BLE001 - a broken cache entry is retrained, not fatal
            log.warning("recommender %r: cached model at %s did not load (%s); retraining", spec.text, path, exc)
    model = _build_plugin(spec, cls, settings, inject)
    start = time.perf_counter()
    fitted = model.fit(world.split.train, world.dataset.n_users, world.dataset.n_items, valid=world.split.valid)
    model = fitted if fitted is not None else model
    seconds = time.perf_counter() - start
    try:
        model.save(path)
        (path / SPEC_MARKER).write_text(json.dumps(key_data, sort_keys=True, default=str), encoding="utf-8")
    except NotImplementedError:
        log.warning("recommender %r: save() is not implemented, so the trained model is not cached", spec.text)
    return model, seconds


# ---- ranking files and services -----------------------------------------------------------------------
def _external_settings(config: ExperimentConfig, spec: RecommenderSpec, overrides: dict[str, Any]) -> dict[str, Any]:
    """[models.<label>] settings, then the spec's ?key=value options, then `overrides`."""
    return recommender_settings(config, spec.label) | dict(spec.options) | overrides


def build_file(
    config: ExperimentConfig, world: World, spec: RecommenderSpec, overrides: dict[str, Any] | None = None
) -> RankingFileRecommender:
    settings = _external_settings(config, spec, overrides or {})
    path = Path(spec.target).expanduser()
    try:
        ranking = read_ranking_file(path, world.dataset, ids=str(settings.get("ids", "raw")))
        return RankingFileRecommender(ranking=ranking, source=str(path), **settings)
    except (RankingFileError, TypeError, ValueError) as exc:
        raise spec.fail(str(exc)) from None


def build_http(
    world: World, config: ExperimentConfig, spec: RecommenderSpec, overrides: dict[str, Any] | None = None
) -> HTTPRecommender:
    settings = _external_settings(config, spec, overrides or {})
    try:
        return HTTPRecommender(url=spec.target, id_map=IdMap.of(world.dataset), **settings)
    except (TypeError, ValueError) as exc:
        raise spec.fail(str(exc)) from None


def fit_external(model: Any, world: World) -> tuple[Any, float]:
    start = time.perf_counter()
    model.fit(world.split.train, world.dataset.n_users, world.dataset.n_items)
    return model, time.perf_counter() - start


def build_unfitted(config: ExperimentConfig, world: World, spec: RecommenderSpec, llm: LLM | None = None) -> Any:
    """A new, unfitted recommender for `spec`, for loops that refit it every round (`simrec population`): a
    registry model, a plugin class built with its settings, or a ranking file / service (whose fit trains
    only the fallback)."""
    if spec.kind == "registry":
        return registry.make(spec.target, **recommender_settings(config, spec.label))
    if spec.kind == "import":
        settings = recommender_settings(config, spec.label)
        return _build_plugin(spec, import_class(spec), settings, {"dataset": world.dataset, "llm": llm})
    if spec.kind == "file":
        return build_file(config, world, spec)
    return build_http(world, config, spec)


# ---- checks before a run ------------------------------------------------------------------------------
def check_spec(config: ExperimentConfig, world: World, spec: RecommenderSpec) -> None:
    """Resolve one spec without training: import and protocol-check a class and its settings; read and check
    a ranking file (logging how many personas it leaves to the fallback); probe a service once."""
    if spec.kind == "import":
        cls = import_class(spec)
        settings = recommender_settings(config, spec.label)
        try:
            inspect.signature(cls).bind(**{**accepted_kwargs(cls, dict.fromkeys(INJECTABLE, True)), **settings})
        except TypeError as exc:
            raise spec.fail(f"settings {sorted(settings)} do not fit {cls.__name__}(): {exc}") from None
        except ValueError:
            pass  # no signature to check
    elif spec.kind == "file":
        model = build_file(config, world, spec)
        assert model.ranking is not None
        covered = set(model.ranking.users().tolist())
        absent = sorted(u for u in world.personas if u not in covered)
        if absent:
            log.warning(
                "recommender %r: %d of %d personas are not in the file (e.g. raw user ids %s); their pages come "
                "from the fallback %r",
                spec.text,
                len(absent),
                len(world.personas),
                [str(world.dataset.user_raw_ids[u]) for u in absent[:5]],
                model.config.fallback,
            )
    elif spec.kind == "http":
        model, _ = fit_external(build_http(world, config, spec), world)
        user = min(world.personas)
        try:
            model.probe(user, config.simulation.page_size, world.personas[user].train_items)
        except HTTPRecommenderError as exc:
            raise spec.fail(f"probe request failed: {exc}") from None
        finally:
            model.close()


def check_recommender_specs(config: ExperimentConfig, world: World) -> list[str]:
    """Check every spec of the run (`check_spec`) before any simulation starts; the first bad one raises a
    `SpecError`. Returns the policy labels in order (the names of the run's policy directories)."""
    specs = parse_specs(config.recommenders.names)
    for spec in specs:
        check_spec(config, world, spec)
    return [spec.label for spec in specs]
