"""Write a dataset of `Sample`s to DIR/data.parquet, streaming (never all samples in memory).

    python -m jobs.make_data synthetic --out DIR --num N --seed S [--width W --height H
        --target-size PX --landmarks K ...]

One subcommand per source. `synthetic` takes every `SyntheticConfig` field as a flag
(`--target-size` sets `target_size`); fields not given keep their defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from core.dataset import write_samples
from core.synthetic import SyntheticConfig, generate

DATA_FILE = "data.parquet"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs.make_data", description=__doc__)
    sources = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    synthetic = sources.add_parser("synthetic", help="the synthetic tasks (core.synthetic)")
    synthetic.add_argument("--out", type=Path, required=True, help="output folder")
    synthetic.add_argument("--num", type=int, required=True, help="number of samples")
    synthetic.add_argument("--seed", type=int, default=0, help="dataset seed (>= 0)")
    for name, field in SyntheticConfig.model_fields.items():
        kind = int if field.annotation is int else str  # sizes and counts; `task` a name
        synthetic.add_argument(
            "--" + name.replace("_", "-"),
            dest=f"config.{name}",
            type=kind,
            default=None,
            metavar=kind.__name__.upper(),
            help=f"{field.description} (default {field.default})",
        )
    return parser


def synthetic_config(args: argparse.Namespace) -> SyntheticConfig:
    """The config from the flags that were given."""
    given = {
        key.removeprefix("config."): value
        for key, value in vars(args).items()
        if key.startswith("config.") and value is not None
    }
    return SyntheticConfig(**given)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num < 0 or args.seed < 0:
        parser.error("--num and --seed must be non-negative")
    try:
        config = synthetic_config(args)
    except ValidationError as exc:
        parser.error(f"invalid synthetic config:\n{exc}")
    path = args.out / DATA_FILE
    rows = write_samples(path, generate(config, args.num, args.seed))
    print(f"wrote {rows} rows to {path}")


if __name__ == "__main__":
    main()
