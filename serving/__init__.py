"""HTTP serving: the OpenAI protocol, request limits and image checks, and the serving model
(one engine: chat completions and ERGO's two-stage answer). `jobs/serve.py` deploys it."""
