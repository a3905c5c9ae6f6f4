"""The verifier interface: a frozen VLM that answers the question from the crop ALONE.

ERGO's region-verification reward asks a frozen model the full question (with options) about
the crop the policy chose, withholding the original image on purpose: if the crop is enough
to answer, the region was the right one. This module defines what is asked and answered;
`actors.verifier` hosts the model in engine actors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from core.trajectory import Trajectory


@dataclass(frozen=True)
class VerifierQuery:
    """The crop the policy chose, and the question with its options."""

    crop: Image.Image
    question: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class VerifierAnswer:
    """The verifier's reply, or why it could not answer (timeouts, a dead engine), and this
    answer's share of its batch's engine time (0 when unknown)."""

    text: str = ""
    failure: str | None = None
    seconds: float = field(default=0.0, compare=False)


@dataclass(frozen=True)
class EarlyQuery:
    """A verifier query the rollout worker sent as soon as the crop existed, while stage 2 was
    still generating: the ObjectRef of its batch's answers and this query's index there."""

    answers: Any
    index: int


class Verifier(Protocol):
    def answer(self, queries: list[VerifierQuery]) -> list[VerifierAnswer]:
        """One answer per query, in order; failures are answers with `failure` set."""
        ...


def query_for(trajectory: Trajectory) -> VerifierQuery | None:
    """What the verifier is asked about a trajectory (None if the policy chose no region: the
    rollout failed, or its box fell back to the whole image, which must not earn the reward)."""
    if trajectory.failure is not None or trajectory.fallback is not None:
        return None
    if len(trajectory.images) < 2:
        return None
    sample = trajectory.sample
    return VerifierQuery(trajectory.images[1], sample.question, sample.options)
