"""A retry budget: retries add at most a tenth to the load a model's replicas see.

When replicas refuse (429, 503) or fail, trying another is right for one call and wrong for all of them: under an
overload every refused call tried three times triples the load on replicas that are already full. So retries
spend from a token bucket per model (after Finagle's ``RetryBudget`` and gRPC's retry throttling): each first try
deposits ``ratio`` (0.1) of a token, each retry withdraws one, and a retry with less than one token in the bucket
is not made (the last answer stands, and ``harmony_router_retries_total{outcome="refused_by_budget"}`` counts it).
The bucket holds at most ``reserve`` tokens and starts full, so a router that has just started, or sees little
traffic, can still step around a pod that died; over any stretch, retries <= reserve + ratio x first tries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RATIO = 0.1  # tokens a first try deposits: retries add at most this share of the load
RESERVE = 10.0  # tokens the bucket holds at most, and starts with


@dataclass
class RetryBudget:
    ratio: float = RATIO
    reserve: float = RESERVE
    _tokens: dict[str, float] = field(default_factory=dict)  # by model

    def first_try(self, model: str) -> None:
        """A call's first try of ``model``: the budget grows by ``ratio``, up to ``reserve``."""
        self._tokens[model] = min(self.reserve, self.tokens(model) + self.ratio)

    def try_retry(self, model: str) -> bool:
        """Whether a retry of a call to ``model`` may be made now (if so, it is paid for)."""
        tokens = self.tokens(model)
        if tokens < 1.0 - 1e-9:  # ten deposits of 0.1 make a token, whatever floating point says
            return False
        self._tokens[model] = tokens - 1.0
        return True

    def tokens(self, model: str) -> float:
        return self._tokens.get(model, self.reserve)
