#!/usr/bin/env bash
# The main job on the embedded default: tiny model + synthetic data, two-stage episodes in vLLM.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec "${UV[@]}" run --locked --extra cpu python -m jobs.rollout "$@"
