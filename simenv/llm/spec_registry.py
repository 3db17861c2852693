"""The prompt specs the mock answers with, by template name. Each owner (agents, recommenders) registers its
specs when its spec module is imported, so the core names no domain template and imports no owner."""

from __future__ import annotations

from simenv.llm.prompt_spec import PromptSpec

_SPECS: dict[str, PromptSpec] = {}


def register_specs(*specs: PromptSpec) -> dict[str, PromptSpec]:
    """Register `specs` by template name and return them so; a name another package already owns is an error."""
    for spec in specs:
        held = _SPECS.get(spec.name)
        if held is not None and held.package != spec.package:
            raise ValueError(f"template {spec.name!r} is registered by {held.package!r}, not {spec.package!r}")
        _SPECS[spec.name] = spec  # the same owner re-registering (a module reloaded) replaces its spec
    return {spec.name: spec for spec in specs}


def registered_spec(template: str) -> PromptSpec | None:
    """The spec registered for `template`, if its owner's spec module has been imported."""
    return _SPECS.get(template)


def registered_names() -> list[str]:
    """The registered template names, sorted (for error messages)."""
    return sorted(_SPECS)
