"""Named, weighted loss terms: what each loss returns so that training can log every part."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class LossTerms:
    """A weighted sum of named scalar terms.

    ``terms`` maps a name to a scalar tensor already multiplied by its weight, so the terms add
    up to ``total`` (the tensor to call ``backward()`` on). Terms of different losses combine
    with ``+``; a name may appear only once.
    """

    terms: Mapping[str, Tensor] = field(default_factory=dict)

    @property
    def total(self) -> Tensor:
        """Sum of all terms (a CPU zero when there are none)."""
        values = list(self.terms.values())
        if not values:
            return torch.zeros(())
        return torch.stack([v.reshape(()) for v in values]).sum()

    def __add__(self, other: LossTerms) -> LossTerms:
        clash = sorted(set(self.terms) & set(other.terms))
        if clash:
            raise ValueError(f"loss terms named twice: {', '.join(clash)}")
        return LossTerms({**self.terms, **other.terms})

    def __getitem__(self, name: str) -> Tensor:
        return self.terms[name]

    def scalars(self) -> dict[str, float]:
        """Plain floats for logging: ``total`` first, then each term (this syncs the device)."""
        out = {"total": float(self.total.detach())}
        out.update({name: float(value.detach()) for name, value in self.terms.items()})
        return out
