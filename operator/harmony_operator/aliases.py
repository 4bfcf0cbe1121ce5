"""Pure: aliases that two SpeechModels claim, as the router resolves them (services/router/routing.py).

A model's own name always wins over another model's alias; between two aliases, the model
listed first (the API lists by name) keeps it. Both sides get an ``AliasConflict`` condition.
"""

from __future__ import annotations

from services.core.contracts.specs import NamedModel


def conflicts(models: list[NamedModel]) -> dict[str, str]:
    """Model name -> a message naming each alias it shares and who serves it (no entry: no conflict)."""
    winner: dict[str, str] = {m.name: m.name for m in models}
    for model in models:
        for alias in model.aliases:
            winner.setdefault(alias, model.name)
    claims: dict[str, list[str]] = {}
    for model in models:
        for alias in dict.fromkeys(model.aliases):
            claims.setdefault(alias, []).append(model.name)
    notes: dict[str, list[str]] = {}
    for public, claimants in claims.items():
        everyone = list(dict.fromkeys(([public] if public in {m.name for m in models} else []) + claimants))
        if len(everyone) < 2:
            continue
        for name in everyone:
            others = ", ".join(n for n in everyone if n != name)
            notes.setdefault(name, []).append(f"'{public}' is also claimed by SpeechModel {others}; "
                                              f"the router serves it from {winner[public]}")
    return {name: "; ".join(parts) for name, parts in notes.items()}
