"""The Ray resources of one actor, as config."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class WorkerResources(BaseModel):
    """Ray resources of one actor: a rollout, reward, verifier or learner worker, or a serving
    replica (from config, never hard-coded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_cpus: float = Field(1.0, ge=0.0)
    """Logical CPUs (a fraction on small machines)."""
    num_gpus: float = Field(0.0, ge=0.0)
    """GPUs: 1 per worker on clusters."""
    custom: dict[str, float] = Field(default_factory=dict)
    """Custom resources, e.g. to pin rollout workers to a node type."""

    def bundle(self) -> dict[str, float]:
        bundle = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.custom}
        return {k: v for k, v in bundle.items() if v > 0}

    def ray_options(self) -> dict[str, Any]:
        """The resource options of `ray.remote(...).options(...)` and Serve's
        `ray_actor_options`."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        return {**options, "resources": self.custom} if self.custom else options

    def actor_options(self, max_restarts: int = 0) -> dict[str, Any]:
        """`ray.remote(...).options(...)` for an actor with these resources."""
        return {**self.ray_options(), "max_restarts": max_restarts}
