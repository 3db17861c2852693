"""simenv: the core of simrec — records, data, the LLM transport, the page rules and the Gymnasium environments.

The environments are built from injected parts (dataset, personas, user model, candidate recommender, reward);
`simenv` never imports `agents`, `recommenders`, `experiments` or `simrec`, not even by string. The registered
gym ids and their builders live in `simrec` (`import simrec; gym.make("simrec/FastRec-v1")`).
"""

from __future__ import annotations

from simenv.defaults import MAX_PAGES as PAGES
from simenv.defaults import PAGE_SIZE

__all__ = ["PAGES", "PAGE_SIZE"]
