"""Benchmark: stream synthetic samples to parquet and back; memory must not grow with length.

    python bench/stream_memory.py [--num 10000] [--seed 0]

Generates `--num` samples (default `SyntheticConfig`) lazily into one parquet file in a
temporary folder with `write_samples`, reads every row back with `iter_samples` (decoding a
few images to check them), and prints the process's peak RSS, times, rows/s and file size.
Project acceptance: peak RSS under 1 GiB for 10,000 samples.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from core.dataset import iter_samples, write_samples
from core.synthetic import SyntheticConfig, generate

MIB = 1024 * 1024
PEAK_RSS_LIMIT_MIB = 1024
IMAGES_TO_DECODE = 5


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / MIB


def read_back(path: Path, num: int, config: SyntheticConfig) -> int:
    """Count the rows, decoding `IMAGES_TO_DECODE` evenly spaced images to check them."""
    step = max(1, num // IMAGES_TO_DECODE)
    rows = 0
    for index, sample in enumerate(iter_samples(path)):
        if index % step == 0:
            image = sample.decode_image()
            if image.size != (config.width, config.height):
                raise RuntimeError(f"{sample.id}: image size {image.size} is wrong")
            if sample.gt_box is None or not sample.options:
                raise RuntimeError(f"{sample.id}: gt_box or options missing")
        rows += 1
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=10_000, help="samples to write and read")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    args = parser.parse_args(argv)
    config = SyntheticConfig()
    start_rss = peak_rss_mib()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.parquet"
        start = time.perf_counter()
        written = write_samples(path, generate(config, args.num, args.seed))
        write_s = time.perf_counter() - start
        write_rss = peak_rss_mib()
        size_mib = path.stat().st_size / MIB
        start = time.perf_counter()
        rows = read_back(path, args.num, config)
        read_s = time.perf_counter() - start
    if rows != written or rows != args.num:
        raise RuntimeError(f"wrote {written} rows, read {rows}, asked for {args.num}")
    peak = peak_rss_mib()
    total_s = write_s + read_s
    print(f"rows: {rows}   file: {size_mib:.1f} MiB ({size_mib * 1024 / rows:.1f} KiB/row)")
    print(
        f"write: {write_s:.1f} s ({rows / write_s:.1f} rows/s, {write_s / rows * 1e3:.1f} ms/row)"
    )
    print(f"read:  {read_s:.1f} s ({rows / read_s:.1f} rows/s)")
    print(f"total: {total_s:.1f} s ({rows / total_s:.1f} rows/s)")
    print(
        f"peak RSS: {peak:.0f} MiB (after imports {start_rss:.0f}, after write {write_rss:.0f});"
        f" limit {PEAK_RSS_LIMIT_MIB} MiB: {'OK' if peak < PEAK_RSS_LIMIT_MIB else 'OVER'}"
    )


if __name__ == "__main__":
    main()
