"""A stand-in for the sampler's pydantic ``TypeAdapter`` that counts its calls."""

from __future__ import annotations

from typing import Any


class CountingValidator:
    """Wraps the real adapter; ``calls`` holds the number of documents of each call."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[int] = []

    def validate_python(self, docs: list[dict[str, object]]) -> Any:
        """Count, then validate with the real adapter."""
        self.calls.append(len(docs))
        return self.real.validate_python(docs)
