#!/usr/bin/env bash
# The main job on the embedded default: the tiny model, warm-started on synthetic transcripts,
# trained with GRPO on the synthetic task (local Ray, vLLM CPU engines, local MLflow).
# Extra arguments go to the train job, e.g. `--train.steps 5`.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
run=("${UV[@]}" run --locked --extra cpu python -m)
if [ ! -f runs/demo/tiny-model/model.safetensors ]; then
  "${run[@]}" jobs.make_tiny_model --out runs/demo/tiny-model
fi
if [ ! -f runs/demo/sft-model/model.safetensors ]; then
  "${run[@]}" jobs.sft --model runs/demo/tiny-model --out runs/demo/sft-model
fi
exec "${run[@]}" jobs.train --config configs/demo.toml "$@"
