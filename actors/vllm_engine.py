"""A vLLM engine behind the `Engine` Protocol (the CPU build here, `vllm` on GPUs).

Prompts go in as token ids with one `<|image_pad|>` per image, which vLLM expands; images are
already resized by `core.geometry`, so the processor keeps their size. New weights load in
place through `actors.vllm_weights` without restarting the engine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

from actors.engine import (
    Completion,
    EngineConfig,
    Sampling,
    Scored,
    TokenPrompt,
    Weights,
    check_seeds,
    set_cpu_threads,
)
from actors.vllm_weights import buckets, write_bucket
from core.shared_weights import SharedWeights
from core.shm_files import release

logger = logging.getLogger(__name__)


class VLLMEngine:
    """One `vllm.LLM`. vLLM is imported on construction, so this module imports without it."""

    def __init__(self, config: EngineConfig) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.kv_cache_gib))
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", config.cpu_omp_bind)
        separate = config.engine_process
        if separate is None:
            separate = torch.cuda.is_available()
        import vllm.envs

        vllm.envs.disable_envs_cache()  # vLLM caches env reads after an engine starts
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = str(int(separate))
        from vllm import LLM

        self.config = config
        self.weight_version = 0
        self.on_cpu = not torch.cuda.is_available()
        chunked, batched = _prefill_plan(config, self.on_cpu)
        set_cpu_threads(config)
        # vLLM's CPU worker replaces torch.set_num_threads with a stub that warns on every call
        # (ours ran before); in-process, other libraries' calls would flood the log.
        logging.getLogger("vllm.v1.worker.cpu_worker").setLevel(logging.ERROR)
        self.llm = LLM(
            model=config.model,
            dtype=config.dtype,  # type: ignore[arg-type]
            max_model_len=config.max_model_len,
            max_num_seqs=config.max_num_seqs,
            tensor_parallel_size=config.tensor_parallel_size,
            limit_mm_per_prompt={"image": config.max_images_per_prompt, "video": 0},
            gpu_memory_utilization=_memory_utilization(config.memory_utilization),
            enable_prefix_caching=config.enable_prefix_caching,
            enforce_eager=config.enforce_eager,
            seed=config.seed,
            enable_chunked_prefill=chunked,
            max_num_batched_tokens=batched,
            worker_extension_cls="actors.vllm_weights.WeightReceiver",
        )
        # Where the engine core actually runs decides how weights travel to it.
        self.in_process = type(self.llm.llm_engine.engine_core).__name__ == "InprocClient"

    def generate(
        self, prompts: list[TokenPrompt], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        from vllm import SamplingParams

        def params(seed: int | None) -> SamplingParams:
            return SamplingParams(
                n=sampling.n,
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                seed=seed,  # n > 1: vLLM seeds the k-th completion with seed + k
                logprobs=0,  # of the raw model distribution, before the bias below
                logit_bias={t: -100.0 for t in sampling.banned_token_ids} or None,
                detokenize=False,  # we decode ourselves; vLLM's per-logprob decoding costs ~20%
            )

        check_seeds(prompts, seeds)
        each = [params(seed) for seed in seeds] if seeds is not None else params(sampling.seed)
        outputs = self._generate(prompts, each)
        return [[_completion(c) for c in out.outputs] for out in outputs]

    def score(self, prompts: list[TokenPrompt]) -> list[Scored]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False)
        return [_scored(out) for out in self._generate(prompts, params)]

    def _generate(self, prompts: list[TokenPrompt], params: Any) -> list[Any]:
        """`LLM.generate` from any thread; a request vLLM rejects is a `ValueError`."""
        from vllm.exceptions import VLLMClientError

        self._sync_threads()
        try:
            return self.llm.generate([_vllm_prompt(p) for p in prompts], params, use_tqdm=False)
        except VLLMClientError as exc:  # checked before the engine stepped: it is unharmed
            raise ValueError(f"vLLM rejected the request: {exc}") from exc

    def _sync_threads(self) -> None:
        """vLLM's CPU attention plans its work for the calling thread's OpenMP thread count and
        checks that its kernel runs with torch's. A thread that never ran a torch op still has
        `OMP_NUM_THREADS` (1 in a Ray actor): the first text-only request from such a thread
        (serving's engine thread) failed `thread_num == thread_num (1 vs. 2)` and left the
        engine dead. torch's first call on a thread sets that thread's count from torch's."""
        if self.on_cpu:
            torch.get_num_threads()

    def update_weights(self, version: int, weights: Weights) -> None:
        """Load new weights, then drop every cache the old weights made."""
        self._sync_threads()
        if self.in_process:  # the engine core is here: hand the tensors over, no copy
            named = weights.tensors() if isinstance(weights, SharedWeights) else weights
            self.llm.collective_rpc("load_weights", args=(dict(named),))
        elif isinstance(weights, SharedWeights):  # the learner's file is a checkpoint
            self.llm.collective_rpc("load_weights_file", args=(weights.local_path(),))
        else:
            for bucket in buckets(weights, self.config.weight_bucket_mb << 20):
                path = write_bucket(bucket)
                del bucket
                try:
                    self.llm.collective_rpc("load_weights_file", args=(str(path),))
                finally:
                    release(path)
        # Stale KV from old weights must not be reused; the encoder cache holds old image features.
        self.reset_caches()
        self.weight_version = version

    def reset_caches(self) -> None:
        """Forget cached prompts and images: the prefix (KV), multimodal and encoder caches."""
        self.llm.reset_prefix_cache()
        self.llm.reset_mm_cache()
        self.llm.llm_engine.reset_encoder_cache()

    def shutdown(self) -> None:
        """Stop the engine's processes now rather than at interpreter exit."""
        self.llm.llm_engine.engine_core.shutdown()


def _prefill_plan(config: EngineConfig, on_cpu: bool) -> tuple[bool, int | None]:
    """(chunked prefill, tokens per step) from config; see `EngineConfig.chunked_prefill`."""
    chunked = config.chunked_prefill if config.chunked_prefill is not None else not on_cpu
    batched = config.max_num_batched_tokens
    if chunked:
        return True, batched
    if batched is not None and batched < config.max_model_len:
        raise ValueError(
            f"engine.max_num_batched_tokens ({batched}) is below engine.max_model_len"
            f" ({config.max_model_len}); without chunked prefill a prompt must fit one step"
        )
    return False, batched  # vLLM's default then is at least max_model_len


def _memory_utilization(configured: float | None) -> float:
    if configured is not None:
        return configured
    return 0.85 if torch.cuda.is_available() else 0.1


def _vllm_prompt(prompt: TokenPrompt) -> Any:
    if prompt.images:
        return {"prompt_token_ids": prompt.token_ids, "multi_modal_data": {"image": prompt.images}}
    return {"prompt_token_ids": prompt.token_ids}


def _completion(output: Any) -> Completion:
    token_ids = list(output.token_ids)
    logprobs = [step[t].logprob for step, t in zip(output.logprobs, token_ids, strict=True)]
    return Completion(token_ids, logprobs, output.finish_reason)


def _scored(output: Any) -> Scored:
    token_ids = list(output.prompt_token_ids)
    steps = output.prompt_logprobs[1:]  # the first token has no context
    logprobs = [step[t].logprob for step, t in zip(steps, token_ids[1:], strict=True)]
    return Scored(token_ids, logprobs)
