"""Write a dataset of `Sample`s to DIR/data.parquet, streaming (never all samples in memory).

    python -m jobs.make_data synthetic --out DIR --num N --seed S [--width W --height H
        --target-size PX --landmarks K ...]
    python -m jobs.make_data hf-parquet PATH --out DIR [--image-column image ...
        --box-format xyxy|xywh --box-units pixels|normalized|normalized1000]
    python -m jobs.make_data jsonl FILE --out DIR [--image-root DIR] [the same flags]

One subcommand per source. `synthetic` takes every `SyntheticConfig` field as a flag
(`--target-size` sets `target_size`); fields not given keep their defaults. `hf-parquet` (a
parquet file or a folder of shards) and `jsonl` (JSON lines, or a `.json` array, plus image
files) convert public formats with `core.converters`: `--<field>-column` names where each field
is. A row that cannot be converted is skipped, counted and named with its reason in the summary
and in DIR/bad_rows.jsonl. The exit status is 1, and no data.parquet is written, when the input
is missing or unreadable or no row could be converted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TextIO, get_args

from pydantic import ValidationError

from core.converters import (
    BadRow,
    BoxConvention,
    BoxFormat,
    BoxUnits,
    ColumnMap,
    ConvertConfig,
    convert_hf_parquet,
    convert_jsonl,
    split_bad_rows,
)
from core.dataset import write_samples
from core.sample import SampleError
from core.synthetic import SyntheticConfig, generate

DATA_FILE = "data.parquet"
BAD_ROWS_FILE = "bad_rows.jsonl"
SHOWN_BAD_ROWS = 20  # the summary names this many; bad_rows.jsonl holds them all


@dataclass
class BadRowLog:
    """Writes each bad row to a jsonl file as it is met; keeps the count and the first few."""

    file: TextIO
    count: int = 0
    first: list[BadRow] = field(default_factory=list)

    def add(self, bad: BadRow) -> None:
        self.file.write(json.dumps(bad.to_record()) + "\n")
        self.count += 1
        if len(self.first) < SHOWN_BAD_ROWS:
            self.first.append(bad)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.make_data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sources = parser.add_subparsers(dest="command", required=True, metavar="SOURCE")
    synthetic = sources.add_parser("synthetic", help="the synthetic tasks (core.synthetic)")
    synthetic.add_argument("--out", type=Path, required=True, help="output folder")
    synthetic.add_argument("--num", type=int, required=True, help="number of samples")
    synthetic.add_argument("--seed", type=int, default=0, help="dataset seed (>= 0)")
    for name, info in SyntheticConfig.model_fields.items():
        kind = int if info.annotation is int else str  # sizes and counts; `task` a name
        synthetic.add_argument(
            "--" + name.replace("_", "-"),
            dest=f"config.{name}",
            type=kind,
            default=None,
            metavar=kind.__name__.upper(),
            help=f"{info.description} (default {info.default})",
        )
    hf = sources.add_parser("hf-parquet", help="HF datasets parquet: a file or a shard folder")
    hf.add_argument("input", type=Path, help="a parquet file or a folder of *.parquet files")
    _add_conversion_flags(hf)
    jsonl = sources.add_parser("jsonl", help="JSON lines (or a .json array) and image files")
    jsonl.add_argument("input", type=Path, help="a .jsonl file (or a .json file: one array)")
    jsonl.add_argument(
        "--image-root",
        type=Path,
        default=None,
        help="image paths are relative to this folder (default: the input file's folder)",
    )
    _add_conversion_flags(jsonl)
    return parser


def _add_conversion_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--source", default=None, help="samples' source (default: input name)")
    for name, info in ColumnMap.model_fields.items():
        parser.add_argument(
            f"--{name}-column",
            dest=f"columns.{name}",
            default=info.default,
            metavar="NAME",
            help=f"{info.description} (default {info.default!r})",
        )
    boxes = BoxConvention.model_fields
    for name, kind in (("format", BoxFormat), ("units", BoxUnits)):
        parser.add_argument(
            f"--box-{name}",
            dest=f"box.{name}",
            choices=get_args(kind),
            default=boxes[name].default,
            help=f"{boxes[name].description} (default {boxes[name].default})",
        )


def synthetic_config(args: argparse.Namespace) -> SyntheticConfig:
    """The config from the flags that were given."""
    given = {
        key.removeprefix("config."): value
        for key, value in vars(args).items()
        if key.startswith("config.") and value is not None
    }
    return SyntheticConfig(**given)


def convert_config(args: argparse.Namespace) -> ConvertConfig:
    """The converter's config from the column and box flags."""
    flags = vars(args)
    return ConvertConfig(
        columns=ColumnMap(**_prefixed(flags, "columns.")),
        box=BoxConvention(**_prefixed(flags, "box.")),
        source=args.source if args.source is not None else args.input.resolve().stem,
    )


def make_synthetic(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.num < 0 or args.seed < 0:
        parser.error("--num and --seed must be non-negative")
    try:
        config = synthetic_config(args)
    except ValidationError as exc:
        parser.error(f"invalid synthetic config:\n{exc}")
    path = args.out / DATA_FILE
    rows = write_samples(path, generate(config, args.num, args.seed))
    print(f"wrote {rows} rows to {path}")


def convert(args: argparse.Namespace) -> None:
    """Convert the input; exits with status 1 (no data.parquet left) when nothing was usable."""
    config = convert_config(args)
    try:
        if args.command == "hf-parquet":
            rows = convert_hf_parquet(args.input, config)
        else:
            rows = convert_jsonl(args.input, args.image_root, config)
    except FileNotFoundError as exc:
        _fail(str(exc))
    path, bad_path = args.out / DATA_FILE, args.out / BAD_ROWS_FILE
    args.out.mkdir(parents=True, exist_ok=True)
    with bad_path.open("w", encoding="utf-8") as bad_file:
        log = BadRowLog(bad_file)
        try:
            written = write_samples(path, split_bad_rows(rows, log.add))
        except SampleError as exc:  # the input as a whole is broken
            path.unlink(missing_ok=True)
            _fail(f"{exc}; no {DATA_FILE} written")
    if written == 0:
        path.unlink()
        if log.count == 0:
            _fail(f"{args.input} holds no rows; no {DATA_FILE} written")
        print(summary(written, log, path, bad_path), file=sys.stderr)
        _fail(f"all {log.count} rows of {args.input} are bad; no {DATA_FILE} written")
    print(summary(written, log, path, bad_path))


def summary(written: int, log: BadRowLog, path: Path, bad_path: Path) -> str:
    """What was written and every bad row (the first `SHOWN_BAD_ROWS` by name and reason)."""
    total = written + log.count
    head = (
        f"wrote {written} rows to {path}; {log.count} bad rows "
        f"({total} read = {written} written + {log.count} bad)"
    )
    if log.count == 0:
        return head
    lines = [f"{head}, all listed in {bad_path}:"]
    lines += [f"  {bad.name}: {bad.reason}" for bad in log.first]
    if log.count > len(log.first):
        lines.append(f"  ... and {log.count - len(log.first)} more")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "synthetic":
        make_synthetic(parser, args)
    else:
        convert(args)


def _prefixed(flags: dict[str, object], prefix: str) -> dict[str, object]:
    """The flags whose dest starts with `prefix` ("columns."), keyed without it."""
    return {
        key.removeprefix(prefix): value for key, value in flags.items() if key.startswith(prefix)
    }


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


if __name__ == "__main__":
    main()
