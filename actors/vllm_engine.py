"""A vLLM engine behind the `Engine` Protocol (the CPU build here, `vllm` on GPUs).

Prompts are rendered with the model's own chat template and passed with their images; the
images are already resized by `core.geometry`, so the processor keeps their size.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from actors.engine import ChatRequest, Completion, Sampling

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VLLMEngineConfig:
    """How one vLLM engine is started."""

    model: str
    dtype: str = "float32"
    max_model_len: int = 4096
    max_images_per_prompt: int = 2
    kv_cache_gib: float = 1.0  # host memory for the KV cache on CPU (VLLM_CPU_KVCACHE_SPACE)
    gpu_memory_utilization: float = 0.85  # GPU only
    enable_prefix_caching: bool = True
    enforce_eager: bool = True
    seed: int = 0


class VLLMEngine:
    """One `vllm.LLM` instance; import of vLLM is deferred so the module imports without it."""

    def __init__(self, config: VLLMEngineConfig) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(config.kv_cache_gib))))
        from vllm import LLM

        self.config = config
        self.llm = LLM(
            model=config.model,
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            limit_mm_per_prompt={"image": config.max_images_per_prompt, "video": 0},
            gpu_memory_utilization=config.gpu_memory_utilization,
            enable_prefix_caching=config.enable_prefix_caching,
            enforce_eager=config.enforce_eager,
            seed=config.seed,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def shutdown(self) -> None:
        """Stop the engine's processes now rather than at interpreter exit."""
        self.llm.llm_engine.engine_core.shutdown()

    def render(self, request: ChatRequest) -> str:
        """The prompt text the model sees, ending with the assistant's generation header."""
        return self.tokenizer.apply_chat_template(
            request.messages, tokenize=False, add_generation_prompt=True
        )

    def generate(self, requests: list[ChatRequest], sampling: Sampling) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=sampling.n,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            logprobs=0,
        )
        prompts = [
            {"prompt": self.render(r), "multi_modal_data": {"image": r.images}}
            if r.images
            else {"prompt": self.render(r)}
            for r in requests
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [[_completion(out, c) for c in out.outputs] for out in outputs]


def _completion(request_output, output) -> Completion:  # type: ignore[no-untyped-def]
    logprobs = [
        step[token].logprob for step, token in zip(output.logprobs, output.token_ids, strict=True)
    ]
    return Completion(
        text=output.text,
        token_ids=list(output.token_ids),
        logprobs=logprobs,
        prompt_token_ids=list(request_output.prompt_token_ids),
        finish_reason=output.finish_reason,
    )
