"""The verifier VLM in engine actors, and the client reward actors call it through.

`VerifierWorker` hosts a frozen engine (a tiny model here, e.g. Qwen2.5-VL-72B on clusters) and
answers batches of `VerifierQuery`: the crop is the ONLY image in its prompt, the question comes
with its options, and decoding is greedy. `VerifierClient` sends a batch to one of the verifier
actors with a timeout and retries on the next; a batch that still fails comes back as answers
with `failure` set, which the region reward scores as failed (counted, never a silent zero).
`ask_early` is how a rollout worker sends a batch's queries as soon as its crops exist, so the
verifier answers while stage 2 generates; the reward actor then only collects the answers
(`VerifierClient.collect`), and asks again itself if they are lost or late.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict, Field
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from actors.chat_tokens import ChatTokens
from actors.engine import EngineConfig, Sampling, TokenPrompt
from actors.guarded_engine import build_engine
from core.prompts import DEFAULT_PROMPTS, PromptTemplates, verifier_messages
from core.trajectory import Trajectory
from rewards.verifier import EarlyQuery, VerifierAnswer, VerifierQuery, query_for

logger = logging.getLogger(__name__)


class VerifierConfig(BaseModel):
    """The frozen verifier model and how it is called."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: EngineConfig
    """Its engine (`engine.model`: the verifier's weights, e.g. the policy's initial ones)."""
    max_new_tokens: int = Field(32, ge=1)
    """Length cap of a verifier answer."""
    timeout_s: float = Field(120.0, gt=0.0)
    """Time one batch may take before it is retried on the next verifier actor."""
    max_attempts: int = Field(3, ge=1)
    """Tries per batch before its answers are marked failed."""
    restart_timeout_s: float = Field(900.0, gt=0.0)
    """Longest the client waits for a verifier it restarted to load its engine again."""


class VerifierWorker:
    """Hosts one frozen engine; a plain class that `jobs/` wraps with `ray.remote`."""

    def __init__(
        self, engine: EngineConfig, max_new_tokens: int, prompts: str = str(DEFAULT_PROMPTS)
    ) -> None:
        from transformers import AutoTokenizer

        self.engine = build_engine(engine)
        self.chat = ChatTokens(AutoTokenizer.from_pretrained(engine.model))
        self.templates = PromptTemplates.load(prompts)
        self.max_new_tokens = max_new_tokens

    def ready(self) -> bool:
        return True

    def health(self) -> dict[str, Any]:
        """What the engine can do now: one token within its deadline, or `EngineDead`."""
        return self.engine.health()

    def answer(self, queries: list[VerifierQuery]) -> list[VerifierAnswer]:
        """Greedy answers, one per query, with the crop as the prompt's only image."""
        prompts = [
            TokenPrompt(
                self.chat.prompt(verifier_messages(self.templates, q.question, q.options)),
                [q.crop],
            )
            for q in queries
        ]
        sampling = Sampling(
            max_tokens=self.max_new_tokens,
            temperature=0.0,
            banned_token_ids=self.chat.vision_token_ids,
        )
        start = time.perf_counter()
        outputs = self.engine.generate(prompts, sampling)
        share = (time.perf_counter() - start) / max(1, len(outputs))
        return [VerifierAnswer(self.chat.decode(out[0].token_ids), None, share) for out in outputs]

    def shutdown(self) -> None:
        self.engine.shutdown()


class VerifierClient:
    """Calls verifier actors with a timeout and retries; implements `rewards.verifier.Verifier`.

    A verifier that errs or misses the deadline must then pass its own `health()` within the
    deadline; one that cannot (its engine died or hangs) is killed, and Ray restarts it with
    fresh engine (up to the actor's `max_restarts`), so no later batch queues behind it."""

    def __init__(
        self,
        handles: list[Any],
        timeout_s: float,
        max_attempts: int,
        restart_timeout_s: float = 900.0,
    ) -> None:
        if not handles:
            raise ValueError("VerifierClient needs at least one verifier actor")
        self.handles = handles
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.restart_timeout_s = restart_timeout_s
        self._next: int | None = None  # drawn on first use, so each unpickled copy spreads load
        self.retries = 0
        self.restarts = 0

    def answer(self, queries: list[VerifierQuery]) -> list[VerifierAnswer]:
        if not queries:
            return []
        reason = ""
        if self._next is None:
            self._next = random.randrange(len(self.handles))
        for attempt in range(1, self.max_attempts + 1):
            self._next = (self._next + 1) % len(self.handles)
            handle = self.handles[self._next]
            ref = handle.answer.remote(queries)
            try:
                return list(ray.get(ref, timeout=self.timeout_s))
            except GetTimeoutError:
                ray.cancel(ref)  # drops it if still queued; a running call finishes unseen
                reason = f"timed out after {self.timeout_s:g} s"
            except (RayActorError, RayTaskError) as exc:
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            logger.warning("verifier attempt %d/%d: %s", attempt, self.max_attempts, reason)
            self._restart_if_unhealthy(handle)
            self.retries += attempt < self.max_attempts
        failure = f"{reason} ({self.max_attempts} attempts)"
        return [VerifierAnswer(failure=failure) for _ in queries]

    def collect(self, early: list[EarlyQuery]) -> list[VerifierAnswer | None]:
        """The answers to queries sent early, within `timeout_s` in all; None for each one whose
        batch failed, was lost with the rollout worker that sent it, or is late."""
        deadline = time.monotonic() + self.timeout_s
        batches: dict[Any, list[VerifierAnswer] | None] = {}
        for ref in dict.fromkeys(q.answers for q in early):
            try:
                batches[ref] = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # late, the verifier failed, or its owner died
                logger.warning("an early verifier query is lost (%s); asking again", exc)
                batches[ref] = None
        return [None if (batch := batches[q.answers]) is None else batch[q.index] for q in early]

    def _restart_if_unhealthy(self, handle: Any) -> None:
        try:
            ray.get(handle.health.remote(), timeout=self.timeout_s)
        except RayActorError:
            return  # already dead: Ray restarts it, or it is gone for good
        except Exception as exc:
            logger.warning("verifier is unhealthy (%s); restarting it", exc)
            ray.kill(handle, no_restart=False)
            self.restarts += 1
            self._wait_ready(handle)

    def _wait_ready(self, handle: Any) -> None:
        """Until the restarted actor's engine is up, or `restart_timeout_s` passed."""
        deadline = time.monotonic() + self.restart_timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                ray.get(handle.ready.remote(), timeout=left)
                return
            except ActorUnavailableError:  # still restarting: calls fail until it is up
                time.sleep(min(1.0, max(left, 0.0)))
            except Exception as exc:
                logger.warning("restarted verifier did not come up: %s", exc)
                return


def ask_early(handle: Any, trajectories: list[Trajectory]) -> None:
    """Send the verifier the queries of the trajectories that chose a region, without waiting,
    and note on each where its answer will be (`Trajectory.early_query`)."""
    asked = [(t, q) for t in trajectories if (q := query_for(t)) is not None]
    if not asked:
        return
    answers = handle.answer.remote([q for _, q in asked])
    for index, (trajectory, _) in enumerate(asked):
        trajectory.early_query = EarlyQuery(answers, index)
