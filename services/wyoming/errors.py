"""A Wyoming request that cannot be served: answered with an ``error`` event, the connection goes on."""

from __future__ import annotations


class WyomingError(Exception):
    def __init__(self, text: str, code: str) -> None:
        super().__init__(text)
        self.text = text
        self.code = code
