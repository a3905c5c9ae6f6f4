#!/usr/bin/env bash
# Lint, type-check and run the test suite (all but `slow`); extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"${UV[@]}" run --locked --extra cpu ruff check .
"${UV[@]}" run --locked --extra cpu ruff format --check .
"${UV[@]}" run --locked --extra cpu mypy
exec "${UV[@]}" run --locked --extra cpu pytest -m "not slow" --durations=15 "$@"
