"""Typed experiment configuration: TOML files under `experiments/configs/`, every key also a CLI flag.

Each section is a strict pydantic model (unknown keys and wrong types are errors that name the file,
section, key and value) so a bad config fails before any work starts. The CLI (pydantic-settings) turns
every field into a `--section.key` flag; flags override the TOML file, which overrides the defaults.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agents.config import DEFAULT_KIND, UserSpec, load_user
from simenv import defaults
from simenv.errors import ConfigError as ConfigError  # the one config error, re-exported
from simenv.llm.factory import Backend, LLMConfig
from simenv.llm.openai_backend import endpoint_urls
from simenv.llm.secrets import redact, shown

CONFIG_DIR = Path(__file__).parent / "configs"
_LLM = LLMConfig()  # the LLM layer's defaults, which [llm] shares


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)


class RunSection(Section):
    name: str = "run"
    """Run name; the run directory is <out_dir>/<name>. A name, not a path: no path separator, no `..`, not
    absolute, not empty."""
    out_dir: Path = Path("runs")
    """Where run directories go."""
    seed: int = 0
    """Master seed: splits, sampling, users and recommenders all derive from it."""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        """The run directory is <out_dir>/<name>: a name that leaves out_dir (or is one) is refused."""
        if not value.strip() or value.strip() in (".", "..") or "/" in value or "\\" in value or "\0" in value:
            raise ValueError("must be a plain name (no path separator, no '..', not absolute, not empty)")
        return value


class DataSection(Section):
    dataset: str = defaults.DATASET
    """ml-100k, ml-1m, synthetic, or a directory holding official MovieLens files."""
    split_users: int | None = Field(None, ge=1)
    """Users in the Agent4Rec split (recommenders train on their 40% train part); None = every eligible user."""
    n_personas: int = Field(50, ge=1)
    """How many of the split's users are simulated as personas (a seeded sample)."""
    cache_dir: Path | None = None
    """Parsed-data and model cache (default: $SIMREC_CACHE_DIR or ~/.cache/simrec)."""


class SimulationSection(Section):
    pages: int = Field(defaults.MAX_PAGES, ge=1)
    """Page limit per session (Agent4Rec: 5)."""
    page_size: int = Field(defaults.PAGE_SIZE, ge=1)
    """Items per page (Agent4Rec: 4)."""


class UsersSection(Section):
    kind: str = DEFAULT_KIND
    """The user kind (docs/USERS.md): fitted (the default and the validated one: decisions from the response model
    fitted to real consumption, no LLM), persona (the same decisions narrated by an LLM persona with memory), llm
    (persona plus the LLM's watch answer as a fitted feature), llm-only (the LLM decides), handset (hand-set signal
    weights, research)."""
    config_file: Path | None = None
    """A users.toml with other or more kinds and overrides (default: the packaged agents/configs/users.toml)."""
    embedder: Literal["minilm", "hashing"] = "minilm"
    """Text embedder for memory relevance and the embedding signal."""

    @model_validator(mode="after")
    def _known_kind(self) -> UsersSection:
        """The kind exists in the config file and is valid (the error names the file and the kinds it has)."""
        self.spec()
        return self

    def spec(self) -> UserSpec:
        """The resolved user kind."""
        return load_user(self.kind, self.config_file)

    @property
    def writes_text(self) -> bool:
        """True for the LLM persona kinds (an LLM backend is needed)."""
        return self.spec().writes_text


class LLMSection(Section):
    backend: Backend = _LLM.backend
    """mock (seeded rules, the default: offline and instant), llama-cpp (embedded SmolLM2, what `make demo` runs),
    transformers (local HF model), openai (endpoint)."""
    model: str | None = None
    """Model name (openai), or a model path (llama-cpp GGUF / transformers dir); default: the embedded SmolLM2."""
    base_url: tuple[str, ...] | str | None = None
    """OpenAI-compatible endpoint(s) serving the same model, used round-robin (repeat the flag or separate by
    commas); default $OPENAI_BASE_URL. The API key is read from $OPENAI_API_KEY only."""
    http_client: Literal["auto", "aiohttp", "httpx", "direct"] = _LLM.http_client
    """auto (default): the openai SDK for OpenAI's own API, direct for any other server; aiohttp/httpx: the SDK on that
    HTTP transport; direct: a plain aiohttp POST, ~3-4x less client CPU per call (see docs/LLM_ENDPOINTS.md)."""
    structured_output: Literal["json_schema", "json_object"] = _LLM.structured_output
    """json_schema (OpenAI, vLLM) or json_object+schema (llama.cpp server)."""
    schema_mode: Literal["auto", "full", "plain"] = "auto"
    """Servers without JSON-Schema `prefixItems`: plain sends schemas without it (answers still validated against the
    full schema here); auto switches to plain after the first HTTP 400 that names the schema; full never does."""
    temperature: float = Field(_LLM.temperature, ge=0.0, le=2.0)
    """Sampling temperature."""
    concurrency: int = Field(_LLM.concurrency, ge=1)
    """Concurrent requests per endpoint (endpoint backends)."""
    timeout_s: float = Field(_LLM.timeout_s, gt=0)
    """Per-request timeout in seconds."""
    max_retries: int = Field(_LLM.max_retries, ge=0)
    """Bounded retries on 429/5xx/timeouts/connection errors, each on record in llm_calls."""
    cache: bool = True
    """Persistent response cache (replaying a run hits it 100%)."""
    max_calls: int | None = Field(_LLM.max_calls, ge=1)
    """Budget: stop the run cleanly after this many LLM calls."""
    max_total_tokens: int | None = Field(_LLM.max_total_tokens, ge=1)
    """Budget: stop the run cleanly after this many tokens."""
    max_fallback_share: float | None = Field(0.05, ge=0.0, le=1.0)
    """Stop the run (exit 1, resumable) when more than this share of the pages fell back, checked once 20
    pages are decided; None: no limit. A run of fallbacks measures the fallback rule, not the model."""
    price_per_mtok: float | None = Field(None, ge=0)
    """Price per million tokens (prompt + completion), for the cost `simrec compare --dry-run` prints."""

    @field_validator("base_url")
    @classmethod
    def _urls(cls, value: tuple[str, ...] | str | None) -> tuple[str, ...] | str | None:
        """Each endpoint an http(s):// URL (a comma-separated string lists several)."""
        if value is not None:
            endpoint_urls(value)  # its ValueError names the value
        return value


class LogSection(Section):
    prompts: Literal["off", "full"] = "off"
    """full: llm_calls also stores every rendered prompt and raw answer (never the API key), to audit a run."""


class RecommendersSection(Section):
    names: tuple[str, ...] = ("random", "pop", "mf", "lightgcn", "sasrec")
    """Recommenders to compare (registry names)."""
    config_file: Path | None = None
    """TOML with per-model hyperparameters: a path, or a file name under experiments/configs/ (default
    recommenders.toml, the full offline-benchmark budgets)."""


class FidelitySection(Section):
    n_personas: int = Field(200, ge=1)
    """Personas scored by the fidelity harness."""
    ratios: tuple[int, ...] = (1, 2, 3, 9)
    """Negatives per positive for taste discrimination."""
    kinds: tuple[str, ...] = ("fitted", "handset")
    """User kinds to score (names from the `[users] config_file`)."""


class RLSection(Section):
    algo: Literal["ppo", "a2c", "dqn", "bc", "cql", "bcq"] = "ppo"
    """SB3 algorithm: ppo or a2c (MultiDiscrete slate), dqn (Discrete, slot by slot); or offline from logged
    sessions (d3rlpy, slot by slot): bc (behaviour cloning), cql, bcq."""
    timesteps: int = Field(100_000, ge=1)
    """Training timesteps (offline algorithms: gradient steps)."""
    behaviour: tuple[str, ...] = ("random", "pop", "mf")
    """Offline algorithms: the policies whose logged sessions they learn from (registry names; random = uniform)."""
    offline_episodes: int = Field(1000, ge=1)
    """Offline algorithms: sessions logged per behaviour policy (training personas)."""
    base: str = "mf"
    """Base recommender whose candidates the policy re-ranks (registry name)."""
    rank_sources: tuple[str, ...] = ("mf", "multvae", "lightgcn", "sasrec")
    """Recommenders (registry names, trained on TRAIN) whose catalog rank of each candidate is a candidate feature
    (`rank:<name>` columns of `recommenders.candidate_features`); () = none."""
    action: Literal["weights", "ranking", "slate"] = "ranking"
    """ppo / a2c: the action. weights = a weight per candidate feature, the page = the top candidates by base score +
    w . x (one policy scores every candidate: experiments.rl.policy); ranking = a page of candidate indices drawn
    Plackett-Luce from base score + one item-wise network's score per candidate (experiments.rl.policy.
    CandidateScoringPolicy); slate = a candidate index per slot (MultiDiscrete, SB3's default MLP). dqn and the
    offline algorithms choose slot by slot."""
    members: tuple[int, ...] = (0, 1, 2)
    """Response-model ensemble members trained against (one drawn per episode; 0 = the validated model, others
    refitted with other seeds). One member = no ensemble."""
    eval_member: int = Field(3, ge=0)
    """The member `evaluate-rl` scores the in-simulator metrics with: one the policy was not trained against."""
    time_budget: float | None = Field(None, gt=0)
    """Stop training cleanly after this many seconds (the model trained so far is saved and evaluated)."""
    eval_personas: int = Field(defaults.EVAL_PERSONAS, ge=1)
    """Personas held out from training (a seeded draw) on which `evaluate-rl` scores every policy."""
    eval_fold: int = Field(0, ge=0)
    """Which block of `eval_personas` personas of the seeded permutation is held out: folds 0..K-1 with
    eval_personas = ceil(N / K) score every persona with a policy never trained on it (`benchmarks.bench_rl_transfer
    --folds K` pools them)."""
    eval_text: bool = False
    """Evaluate with the [llm] backend so the users also write text; by default the evaluation uses the mock LLM
    (the grounded decisions, hence every metric, do not depend on the words; the embedded model took >15 min)."""


class PopulationSection(Section):
    rounds: int = Field(10, ge=1)
    """Mesa rounds (each: log in, one page, react, retrain)."""
    recommender: str = "mf"
    """Recommender retrained between rounds."""
    retrain: bool = True
    """Close the loop: refit on train + simulated positives after each round."""
    login_prob: tuple[float, float, float] = (0.3, 0.6, 0.9)
    """Log-in probability per activity group (low, mid, high)."""


class ValiditySection(Section):
    policies: tuple[str, ...] = (
        "random",
        "pop",
        "pop-head",
        "pop-band100",
        "mf",
        "mf-undertrained",
        "mf-noise1",
        "mf-noise3",
        "multvae",
        "lightgcn",
        "lightgcn-undertrained",
        "lightgcn-top200",
        "sasrec",
        "sim-greedy",
    )
    """Policies scored by `simrec validate`: registry names, recommender specs (or their labels), or the variants
    of experiments.validity_policies (degraded models; `sim-greedy`, the simulator's own optimum)."""
    n_personas: int | None = Field(None, ge=1)
    """Personas simulated (a seeded sample of the split's users); None = every eligible user."""
    bootstrap: int = Field(1000, ge=10)
    """Persona-bootstrap resamples for the agreement intervals."""


class RaySection(Section):
    address: str | None = None
    """Ray cluster to join with `--engine ray` ('auto' = the cluster started on this machine by `ray start`, or
    HOST:PORT); None starts a local cluster bound to 127.0.0.1, with no dashboard and no client port."""
    num_workers: int = Field(2, ge=1)
    """Worker actors (one CPU each); a policy's personas are sharded over them."""
    shards_per_worker: int = Field(4, ge=1)
    """Shards per worker and policy: smaller shards balance the load and redo less after a fault."""
    max_retries: int = Field(3, ge=0)
    """Restarts of a worker that died mid-shard; the retried shard resumes from its last checkpoint."""
    llm_endpoints: tuple[str, ...] = ()
    """OpenAI-compatible base URLs the workers share out (worker i uses endpoint i mod n); default the [llm] one."""
    endpoint_concurrency: int | None = Field(None, ge=1)
    """LLM requests in flight per endpoint over the whole cluster (default [llm] concurrency, for endpoints)."""


class ProcessesSection(Section):
    workers: int = Field(2, ge=1)
    """Worker processes of `--engine processes` on this machine (spawned once per command, kept across policies);
    each runs its shards with 1/workers of the sessions in flight and of `[llm] concurrency` (at least one each)."""
    shards_per_worker: int = Field(4, ge=1)
    """Shards per worker and policy (a shard is whole runner chunks; a policy with fewer chunks has fewer shards)."""


class ExperimentConfig(Section):
    """Everything one command needs. Sections a command does not use are ignored by it."""

    run: RunSection = RunSection()
    data: DataSection = DataSection()
    simulation: SimulationSection = SimulationSection()
    users: UsersSection = UsersSection()
    llm: LLMSection = LLMSection()
    log: LogSection = LogSection()
    recommenders: RecommendersSection = RecommendersSection()
    fidelity: FidelitySection = FidelitySection()
    rl: RLSection = RLSection()
    population: PopulationSection = PopulationSection()
    validity: ValiditySection = ValiditySection()
    engine: Literal["auto", "local", "processes", "ray"] = "auto"
    """Where sessions run: local (this process), processes (personas sharded over `[processes] workers` processes
    of this machine) or ray (over a Ray cluster); the same results either way. auto (default): processes for a
    `compare` of LLM users on an endpoint with >= 32 requests in flight on a machine of >= 2 cores (one process
    cannot feed them: docs/LLM_ENDPOINTS.md), local otherwise; the run records the engine it chose."""
    ray: RaySection = RaySection()
    processes: ProcessesSection = ProcessesSection()


DEFAULTS = ExperimentConfig()
"""Every section's defaults: code outside the CLI that needs one of these settings (the RL scripts, the
population model) takes its default from here, so a default is written once."""


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested dict update: values in `override` win; sections merge key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def toml_key_line(text: str, path: tuple[str, ...]) -> int | None:
    """The 1-based line of the TOML key at `path` (e.g. ("llm", "api_key")): its `[table]` header, its `key =`
    line inside the parent table, or a dotted `a.b =` line; else its parent's line. Best effort (None)."""
    if not path:
        return None
    lines = text.splitlines()

    def header(parts: tuple[str, ...]) -> re.Pattern[str]:
        return re.compile(r"^\s*\[\s*" + r"\s*\.\s*".join(re.escape(p) for p in parts) + r"\s*\]\s*(#.*)?$")

    table = header(path)
    parent = header(path[:-1]) if len(path) > 1 else None
    key = re.compile(r"^\s*[\"']?" + re.escape(path[-1]) + r"[\"']?\s*=")
    dotted = re.compile(r"^\s*" + r"\s*\.\s*".join(re.escape(p) for p in path) + r"\s*=")
    inside = parent is None  # top-level keys come before any header
    for number, line in enumerate(lines, 1):
        if table.match(line) or dotted.match(line):
            return number
        if line.lstrip().startswith("["):
            inside = parent is not None and bool(parent.match(line))
        elif inside and key.match(line):
            return number
    return toml_key_line(text, path[:-1])


def _has_path(data: Any, path: tuple[str, ...]) -> bool:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def format_validation_error(
    error: ValidationError,
    source: str,
    file_text: str | None = None,
    flags: dict[str, Any] | None = None,
    skip: int = 0,
) -> str:
    """One line: every problem as `<where>: [section.key] <what> (got <value>)`, secrets redacted.

    `<where>` is `<file> line <n>` for a key from the config file, `flag --section.key` for a command-line flag.
    `skip` drops leading location parts (the CLI's subcommand name)."""
    problems = []
    for e in error.errors():
        loc = tuple(str(p) for p in e["loc"][skip:])
        where = source
        if flags is not None and _has_path(flags, loc):
            where = "flag --" + ".".join(p.replace("_", "-") for p in loc)
        elif file_text is not None:
            line = toml_key_line(file_text, loc)
            if line is not None:
                where = f"{source} line {line}"
        value = shown(e["input"], loc)
        key = ".".join(loc) or "(top level)"
        if e["type"] == "extra_forbidden" and loc and loc[-1] == "api_key":
            problems.append(f"{where}: [{key}] API keys are not read from config (value {value}); set OPENAI_API_KEY")
        elif e["type"] == "extra_forbidden":
            problems.append(f"{where}: [{key}] unknown key (value {value})")
        else:
            problems.append(f"{where}: [{key}] {e['msg']} (got {value})")
    return redact("invalid config: " + "; ".join(problems))


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, naming the file and line on a syntax error (secrets in the message redacted)."""
    try:
        return tomllib.loads(_read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(redact(f"config {path}: {exc}")) from None


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"config {path} line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None


def resolve_config_path(path: Path) -> Path:
    """A config given by bare name ('demo') resolves to experiments/configs/demo.toml."""
    if path.is_file():
        return path
    candidate = CONFIG_DIR / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
    return candidate if candidate.is_file() else path


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Defaults, then the TOML file, then `overrides` (explicit CLI flags), validated as one."""
    data: dict[str, Any] = {}
    source = "(defaults)"
    text = None
    if path is not None:
        path = resolve_config_path(path)
        text = _read_text(path)
        data = read_toml(path)
        source = str(path)
    if overrides:
        data = deep_merge(data, overrides)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, text, overrides)) from None
