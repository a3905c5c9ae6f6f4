"""Benchmark: draw training batches from a large parquet dataset as the train job does.

    python bench/stream_train.py [--rows 100000] [--images 128] [--prompts-per-step 8]
                                 [--window 2] [--epochs 1.25] [--seed 0]

The rows: `--images` distinct synthetic samples (default `SyntheticConfig`: 2048x1536 PNGs of
about 26 KiB) are rendered once, then `--rows` rows are written with `write_samples` (row
groups of 64) cycling through them, each row with its own id (`row-N`). The file therefore has
the size and the row groups of a real dataset of that length, without rendering every image
(about 20 ms each: 2,000 s for 100,000). With at least 64 images no row group repeats an image,
so parquet's per-row-group dictionary cannot shrink the file.

Then it reads the file as `jobs.train` does: a `core.stream.ShuffledParquet` (shuffled by
`--seed`, `--window` row groups mixed) asked for batches of `--prompts-per-step` samples from a
cursor, through `--epochs` epochs (so across an epoch boundary), checking that the first epoch
draws every row exactly once and decoding a few images. It prints the process's peak RSS, the
times and samples/s. Project acceptance: peak RSS under 1.5 GiB for 100,000 rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import resource
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from core.dataset import write_samples
from core.sample import Sample
from core.stream import ShuffledParquet
from core.synthetic import SyntheticConfig, generate

MIB = 1024 * 1024
PEAK_RSS_LIMIT_MIB = 1536
IMAGES_TO_DECODE = 5


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / MIB


def cycled_rows(images: list[Sample], rows: int) -> Iterator[Sample]:
    """`rows` samples cycling through `images`, row N with id `row-N`."""
    for index in range(rows):
        yield dataclasses.replace(images[index % len(images)], id=f"row-{index}")


def draw(source: ShuffledParquet, batch_size: int, total: int) -> int:
    """Draw `total` samples in batches from cursor 0 as the train loop does; check the first
    epoch draws each row once; returns the samples drawn."""
    seen = np.zeros(len(source), dtype=bool)
    decode_every = max(1, total // IMAGES_TO_DECODE)
    cursor = 0
    while cursor < total:
        batch = source.batch(cursor, min(batch_size, total - cursor))
        for position, sample in enumerate(batch, start=cursor):
            if position < len(source):
                row = int(sample.id.removeprefix("row-"))
                if seen[row]:
                    raise RuntimeError(f"{sample.id} drawn twice in the first epoch")
                seen[row] = True
            if position % decode_every == 0:
                sample.decode_image()
        cursor += len(batch)
    if not seen.all() and total >= len(source):
        raise RuntimeError(f"the first epoch missed {int((~seen).sum())} rows")
    return cursor


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the dataset")
    parser.add_argument("--images", type=int, default=128, help="distinct images, cycled")
    parser.add_argument("--prompts-per-step", type=int, default=8, help="samples per batch")
    parser.add_argument("--window", type=int, default=2, help="row groups shuffled together")
    parser.add_argument("--epochs", type=float, default=1.25, help="epochs to draw")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed")
    args = parser.parse_args(argv)
    start_rss = peak_rss_mib()
    images = list(generate(SyntheticConfig(), args.images, args.seed))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.parquet"
        start = time.perf_counter()
        write_samples(path, cycled_rows(images, args.rows))
        write_s = time.perf_counter() - start
        write_rss = peak_rss_mib()
        size_mib = path.stat().st_size / MIB
        start = time.perf_counter()
        source = ShuffledParquet(path, args.seed, window=args.window)
        open_s = time.perf_counter() - start
        start = time.perf_counter()
        drawn = draw(source, args.prompts_per_step, math.ceil(args.epochs * len(source)))
        draw_s = time.perf_counter() - start
    peak = peak_rss_mib()
    print(f"rows: {len(source)} ({args.images} distinct images)   file: {size_mib:.0f} MiB")
    print(f"write: {write_s:.1f} s   open (metadata): {open_s * 1e3:.0f} ms")
    print(
        f"draw:  {drawn} samples ({drawn / len(source):.2f} epochs) in batches of "
        f"{args.prompts_per_step}: {draw_s:.1f} s ({drawn / draw_s:,.0f} samples/s), "
        f"{source.reads} row group reads"
    )
    print(
        f"peak RSS: {peak:.0f} MiB (after imports {start_rss:.0f}, after write {write_rss:.0f});"
        f" limit {PEAK_RSS_LIMIT_MIB} MiB: {'OK' if peak < PEAK_RSS_LIMIT_MIB else 'OVER'}"
    )


if __name__ == "__main__":
    main()
