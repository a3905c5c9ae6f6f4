"""The eval job's arithmetic without engines: records, summaries, percentiles, the files it
writes, the tolerant benchmark reader, HR-Bench's cyclic scores, and whole `run_eval`s against
scripted pools (on benchmark files in their real layouts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from benchmark_files import encoded_image, hrbench_copies, write_hrbench, write_mmerwl, write_vstar
from PIL import Image

from actors.actor_pool import PoolConfig
from actors.episode import EpisodeConfig
from core.sample import Sample
from core.trajectory import Trajectory, failed_trajectories
from jobs.eval import EvalConfig, parse_args, required_model_len, run_eval
from jobs.eval_data import UNREADABLE, RowFailure, count_rows, eval_rows
from jobs.eval_report import (
    EvalRecord,
    format_summary,
    percentile,
    plot_efficiency,
    record_from_trajectory,
    summarize,
    summary_metrics,
    write_records,
)
from rewards.answer import AccuracyConfig

OPTIONS = ("red", "blue", "green", "yellow")


def _sample(i: int, category: str = "colour", answer: str = "B") -> Sample:
    image = encoded_image((280, 140), (30 * i % 256, 90, 60), "PNG")
    return Sample(f"s{i}", image, f"Question {i}?", OPTIONS, answer, category=category)


def _trajectory(
    sample: Sample, reply: str, two_stage: bool = True, latency: float = 1.0
) -> Trajectory:
    view = Image.new("RGB", (56, 28))
    return Trajectory(
        sample,
        0,
        0,
        images=[view, view] if two_stage else [view],
        stage2_text=reply,
        crop_box=(0, 0, 140, 70) if two_stage else None,
        fallback=None,
        original_size=(280, 140),
        coarse_tokens=2,
        crop_tokens=2 if two_stage else 0,
        time_stage1_s=latency / 2 if two_stage else 0.0,
        time_stage2_s=latency / 2 if two_stage else latency,
    )


# --- records and summaries -------------------------------------------------------------------


def test_record_reads_the_answer_with_the_reward_rules() -> None:
    sample = _sample(1)
    right = record_from_trajectory(
        _trajectory(sample, "<answer>(B) blue</answer>"), AccuracyConfig()
    )
    wrong = record_from_trajectory(_trajectory(sample, "<answer>C</answer>"), AccuracyConfig())
    untagged = record_from_trajectory(_trajectory(sample, "B"), AccuracyConfig())
    assert (right.prediction, right.correct, right.box) == ("B", True, (0, 0, 140, 70))
    assert (wrong.prediction, wrong.correct) == ("C", False)
    assert (untagged.prediction, untagged.correct) == (None, False)
    assert right.total_tokens == 4 and right.latency_s == pytest.approx(1.0)
    assert right.full_tokens == 50  # 280x140 at Qwen's default cap: 10 x 5 tokens


def test_strict_records_show_the_letters_compared() -> None:
    strict = AccuracyConfig(answer_match="strict")
    sample = _sample(1)
    right = record_from_trajectory(_trajectory(sample, "B"), strict)  # no tag: read whole
    wrong = record_from_trajectory(_trajectory(sample, "<answer>(B) blue</answer>"), strict)
    assert (right.prediction, right.correct) == ("B", True)
    assert (wrong.prediction, wrong.correct) == ("BBLUE", False)


def test_failed_episode_is_a_wrong_answer_with_its_reason() -> None:
    failed = Trajectory(_sample(2), 0, 0, failure="image: cannot decode")
    record = record_from_trajectory(failed, AccuracyConfig())
    assert (record.correct, record.failure, record.total_tokens) == (
        False,
        "image: cannot decode",
        0,
    )


def test_single_stage_record_has_no_box() -> None:
    record = record_from_trajectory(
        _trajectory(_sample(3), "<answer>B</answer>", False), AccuracyConfig()
    )
    assert record.box is None and record.crop_tokens == 0 and record.correct


def _records() -> list[EvalRecord]:
    ran = {"coarse_tokens": 10}
    return [
        EvalRecord("a", "colour", "B", "B", True, crop_tokens=6, latency_s=1.0, **ran),
        EvalRecord(
            "b", "colour", "A", "C", False, crop_tokens=2, latency_s=2.0, fallback="missing", **ran
        ),
        EvalRecord("c", "count", "A", "A", True, crop_tokens=4, latency_s=3.0, **ran),
        EvalRecord("d", "count", "D", failure="engine: prompt too long"),
        EvalRecord("e", UNREADABLE, "", failure="row 4: cannot decode image"),
    ]


def test_summary_counts_failures_in_every_denominator() -> None:
    summary = summarize(_records(), {"mode": "two-stage", "max_vision_tokens": 64})
    assert (summary["samples"], summary["correct"], summary["failed"]) == (5, 2, 2)
    assert summary["accuracy"] == pytest.approx(2 / 5)
    assert summary["categories"]["count"] == {
        "samples": 2,
        "correct": 1,
        "failed": 1,
        "accuracy": 0.5,
    }
    assert [f["id"] for f in summary["failures"]] == ["d", "e"]
    assert summary["failures"][0]["reason"] == "engine: prompt too long"


def test_categories_add_up_to_the_total() -> None:
    summary = summarize(_records(), {"mode": "two-stage", "max_vision_tokens": 64})
    blocks = summary["categories"].values()
    for key in ("samples", "correct", "failed"):
        assert sum(b[key] for b in blocks) == summary[key]


def test_tokens_latency_and_fallbacks_average_over_samples_that_ran() -> None:
    summary = summarize(_records(), {"mode": "two-stage", "max_vision_tokens": 64})
    assert summary["vision_tokens"]["coarse"] == pytest.approx(10)
    assert summary["vision_tokens"]["crop"] == pytest.approx(4)
    assert summary["vision_tokens"]["total"] == pytest.approx(14)
    assert summary["latency_s"] == {"mean": 2.0, "p50": 2.0, "p95": pytest.approx(2.9)}
    assert summary["fallback_rate"] == pytest.approx(1 / 3)
    single = summarize(_records(), {"mode": "single-stage", "max_vision_tokens": 64})
    assert single["fallback_rate"] is None


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, 0.0),
        ([3.0], 95, 3.0),
        ([1.0, 2.0], 50, 1.5),
        (list(range(1, 101)), 50, 50.5),
        (list(range(1, 101)), 95, 95.05),
        ([5.0, 1.0, 3.0], 100, 5.0),
    ],
)
def test_percentile_interpolates_linearly(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)
    if values:
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_summary_metrics_are_flat_slash_names() -> None:
    metrics = summary_metrics(summarize(_records(), {"mode": "two-stage", "max_vision_tokens": 64}))
    assert metrics["eval/two-stage/accuracy"] == pytest.approx(0.4)
    assert metrics["eval/two-stage/accuracy/count"] == pytest.approx(0.5)
    assert metrics["eval/two-stage/latency_p95_s"] == pytest.approx(2.9)
    assert metrics["eval/two-stage/fallback_rate"] == pytest.approx(1 / 3)
    assert all(isinstance(v, float | int) for v in metrics.values())


def test_records_parquet_and_plot(tmp_path: Path) -> None:
    records = _records()
    table = pq.read_table(write_records(tmp_path / "r.parquet", records)).to_pylist()
    assert [r["id"] for r in table] == ["a", "b", "c", "d", "e"]
    assert [r["total_tokens"] for r in table] == [16, 12, 14, 0, 0]
    assert table[3]["failure"] == "engine: prompt too long" and table[3]["correct"] is False
    runs = [
        summarize(records, {"mode": mode, "max_vision_tokens": cap, "dataset": "vstar"})
        for mode in ("two-stage", "single-stage")
        for cap in (64, 256)
    ]
    png = plot_efficiency(runs, tmp_path / "plot.png")
    assert Image.open(png).size[0] > 100


# --- reading benchmarks row by row -----------------------------------------------------------


def _vstar_row(i: int, image: bytes) -> tuple[dict[str, Any], bytes]:
    text = f"What colour is thing {i}?\n(A) red\n(B) blue\nAnswer with the letter."
    record = {"image": f"img/{i}.png", "text": text, "label": "B", "question_id": i}
    return record | {"category": "direct_attributes" if i % 2 else "relative_position"}, image


def _hrbench_row(i: int, image: bytes) -> tuple[dict[str, Any], bytes]:
    record = {"index": 100 + i, "question": f"Which {i}?", "answer": "A", "category": "single"}
    return record | {"cycle_category": "x"} | dict(zip("ABCD", OPTIONS, strict=True)), image


def test_unreadable_rows_become_failures_named_by_their_id(tmp_path: Path) -> None:
    good = encoded_image((60, 40), (200, 10, 10), "PNG")
    write_vstar(
        tmp_path, [_vstar_row(0, good), _vstar_row(1, b"not an image"), _vstar_row(2, good)]
    )
    with (tmp_path / "test_questions.jsonl").open("a") as f:
        f.write("{broken json\n")
    write_hrbench(tmp_path, [_hrbench_row(0, b"\x89PNG broken"), _hrbench_row(1, good)])

    vstar = [row.item for row in eval_rows("vstar", tmp_path)]
    hrbench = [row.item for row in eval_rows("hrbench", tmp_path, "4k")]

    assert [type(i).__name__ for i in vstar] == ["Sample", "RowFailure", "Sample", "RowFailure"]
    assert vstar[1] == RowFailure("vstar_1", "direct_attributes", "B", vstar[1].reason)
    assert "line 2" in vstar[1].reason and "cannot decode" in vstar[1].reason
    assert (vstar[3].id, vstar[3].category) == ("vstar_line4", UNREADABLE)
    assert isinstance(hrbench[0], RowFailure) and hrbench[0].id == "hrbench_4k_100"
    assert isinstance(hrbench[1], Sample) and hrbench[1].id == "hrbench_4k_101"
    assert count_rows("vstar", tmp_path, "4k") == 4 and count_rows("hrbench", tmp_path, "4k") == 2


# --- the job around them ---------------------------------------------------------------------


def test_config_runs_every_mode_at_every_cap_greedily(tmp_path: Path) -> None:
    argv = ["--dataset", "hrbench", "--model", "Qwen/x", "--max-vision-tokens", "[64, 16384]"]
    argv += ["--modes", '["two-stage", "single-stage"]', "--hrbench-variant", "8k"]
    config, address = parse_args([*argv, "--max-new-tokens", "32", "--data-root", str(tmp_path)])
    episodes = config.episodes()
    assert [(e.mode, e.coarse_max_tokens) for e in episodes] == [
        ("two-stage", 64),
        ("two-stage", 16384),
        ("single-stage", 64),
        ("single-stage", 16384),
    ]
    assert all(e.group_size == 1 and e.temperature == 0.0 for e in episodes)
    assert config.out == "runs/eval/hrbench_8k" and address is None and config.tracking is None
    # two-stage at 16384: two images, two replies, text room; then rounded up to 256
    assert required_model_len(episodes) == 34048
    assert config.engine().max_model_len == 34048  # a hub name: no local limit to respect


def test_eval_config_comes_from_a_toml_file_and_overrides(tmp_path: Path) -> None:
    file = tmp_path / "eval.toml"
    file.write_text('dataset = "vstar"\ndata_root = "v"\nmodel = "m"\nmax_vision_tokens = [640]\n')
    config, _ = parse_args(["--config", str(file), "--max-vision-tokens", "1280"])
    assert config.max_vision_tokens == (1280,) and config.out == "runs/eval/vstar"
    config, _ = parse_args(["--config", str(file), "--tracking.experiment", "e"])
    assert config.tracking is not None and config.tracking.experiment == "e"


def test_a_bad_eval_field_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--dataset", "vstar", "--data-root", "v", "--model", "m", "--limit", "0"])
    assert exited.value.code == 2
    assert "limit" in capsys.readouterr().err


def test_eval_answer_matching_is_chosen_on_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    required = ["--dataset", "vstar", "--data-root", "v", "--model", "m"]
    assert parse_args(required)[0].accuracy.answer_match == "lenient"
    config, _ = parse_args([*required, "--accuracy.answer-match", "strict"])
    assert config.accuracy.answer_match == "strict"
    with pytest.raises(SystemExit) as exited:
        parse_args([*required, "--accuracy.answer-match", "exact"])
    assert exited.value.code == 2
    assert "accuracy.answer_match" in capsys.readouterr().err


def test_engine_length_stays_within_a_local_models_positions(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"text_config": {"max_position_embeddings": 4096}}')
    config = EvalConfig(
        dataset="synthetic", data_root="x", model=str(tmp_path), modes=("single-stage",)
    )
    # single-stage at 256: the image, 1024 new tokens and 1024 of prompt text
    assert config.model_copy(update={"max_vision_tokens": (256,)}).engine().max_model_len == 2304
    assert config.model_copy(update={"max_vision_tokens": (16384,)}).engine().max_model_len == 4096


class ScriptedPool:
    """Stands in for the actor pool: answers B, and fails requests for sample id `s3`."""

    config = PoolConfig(chunk_size=1)
    slots: dict[int, Any] = {}  # noqa: RUF012

    def broadcast(self, call: Any, what: str) -> None:
        """No actors, so nothing to reset."""

    def run(self, samples: list[Any], episode: Any) -> list[Trajectory]:
        out: list[Trajectory] = []
        for sample in samples:
            if sample.id == "s3":
                out += failed_trajectories([sample], 1, 0, "ValueError: prompt too long")
            else:
                two = episode.mode == "two-stage"
                out.append(_trajectory(sample, "<answer>B</answer>", two, 0.5))
        return out


def test_run_eval_writes_consistent_report_parquet_and_plot(tmp_path: Path) -> None:
    from core.dataset import write_samples

    samples = [_sample(i, "even" if i % 2 == 0 else "odd", "AB"[i % 2]) for i in range(6)]
    write_samples(tmp_path / "data.parquet", samples)
    config = EvalConfig(
        dataset="synthetic",
        data_root=str(tmp_path / "data.parquet"),
        model="m",
        modes=("two-stage", "single-stage"),
        max_vision_tokens=(64,),
        out=str(tmp_path / "out"),
    )
    summaries = run_eval(ScriptedPool(), config)  # type: ignore[arg-type]

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["runs"] == summaries and len(summaries) == 2
    for summary in summaries:
        # odd samples (answer B) are right except s3, which failed in the engine
        assert (summary["samples"], summary["correct"], summary["failed"]) == (6, 2, 1)
        assert summary["categories"]["odd"]["correct"] == 2
        assert summary["failures"] == [{"id": "s3", "reason": "ValueError: prompt too long"}]
        rows = pq.read_table(tmp_path / "out" / summary["parquet"]).to_pylist()
        assert [r["id"] for r in rows] == [s.id for s in samples]
        assert sum(r["correct"] for r in rows) == summary["correct"]
    assert (
        summaries[0]["vision_tokens"]["total"] == 4 and summaries[1]["vision_tokens"]["total"] == 2
    )
    assert (tmp_path / "out" / "accuracy_vs_tokens.png").stat().st_size > 0


def test_episode_config_defaults_to_two_stage() -> None:
    assert EpisodeConfig().mode == "two-stage"


# --- benchmarks in their real layouts, through the eval job's data path ----------------------


class AnswerPool(ScriptedPool):
    """Answers each sample's own answer, except the `wrong` ids (the next of A-D) and the
    `failing` ids (an engine error)."""

    def __init__(self, wrong: frozenset[str] = frozenset(), failing: frozenset[str] = frozenset()):
        self.wrong, self.failing = wrong, failing

    def run(self, samples: list[Any], episode: Any) -> list[Trajectory]:
        out: list[Trajectory] = []
        for s in samples:
            if s.id in self.failing:
                out += failed_trajectories([s], 1, 0, "RuntimeError: engine died")
                continue
            letter = s.answer
            if s.id in self.wrong:
                letter = "ABCD"[("ABCD".index(letter) + 1) % 4]
            out.append(_trajectory(s, f"<answer>{letter}</answer>", episode.mode == "two-stage"))
        return out


def _eval_config(dataset: str, root: Path, out: Path, **fields: Any) -> EvalConfig:
    fields = {"modes": ("two-stage", "single-stage"), "max_vision_tokens": (64,)} | fields
    return EvalConfig(
        dataset=dataset,
        data_root=str(root),
        model="m",
        out=str(out),
        **fields,
    )


def _mmerwl_row(i: int) -> tuple[dict[str, Any], bytes]:
    options = ["(A) 12", "(B) 15", "(C) 18", "(D) 21", "(E) 24"]
    record = {"index": i, "question_id": f"perception/monitoring/{i:04d}", "question": f"Q{i}?"}
    record |= {"multi-choice options": options, "answer": "ABCDE"[i % 5]}
    record |= {"category": "Perception/Monitoring", "l2-category": "counting"}
    return record, encoded_image((90 + i, 60), (20 * i % 256, 80, 30), "PNG" if i % 2 else "JPEG")


def test_mmerwl_shards_as_lmms_eval_stores_them_score_without_load_failures(
    tmp_path: Path,
) -> None:
    rows = [_mmerwl_row(i) for i in range(7)]
    shards = [rows[:3], rows[3:6], rows[6:]]
    write_mmerwl(tmp_path / "mme", shards, "bytes", ("index", "question_id"))  # base64 text
    config = _eval_config("mmerwl", tmp_path / "mme", tmp_path / "out")

    items = [row.item for row in eval_rows("mmerwl", tmp_path / "mme")]
    summaries = run_eval(AnswerPool(), config)  # type: ignore[arg-type]

    assert all(isinstance(i, Sample) for i in items) and len(items) == 7
    assert isinstance(items[0], Sample) and items[0].options[1] == "15"
    assert items[0].id == "mmerwl_perception/monitoring/0000"
    for summary in summaries:
        assert (summary["samples"], summary["failed"], summary["correct"]) == (7, 0, 7)
        assert "cyclic_accuracy" not in summary and "cycles" not in summary


HRBENCH_QUESTIONS = [  # index, question, options, answer, category
    (1, "What colour is the kite?", ("red", "green", "blue", "white"), "C", "single"),
    (2, "How many boats are there?", ("1", "2", "3", "4"), "A", "single"),
    (3, "Which is closer to the tower?", ("car", "bus", "both", "neither"), "B", "cross"),
]


def _hrbench_benchmark(root: Path) -> list[tuple[dict[str, Any], bytes]]:
    """Three questions, four shifted copies each, stored cycle after cycle as HR-Bench does;
    the third question's copy in cycle 3 has an answer that is no option letter."""
    copies = [
        hrbench_copies(index, q, options, answer, encoded_image((64, 48), (40 * index, 9, 9)), c)
        for index, q, options, answer, c in HRBENCH_QUESTIONS
    ]
    rows = [copies[q][k] for k in range(4) for q in range(3)]
    rows[2 * 3 + 2][0]["answer"] = "Z"  # cycle 3, question 3: unreadable
    write_hrbench(root, rows)
    return rows


def test_hrbench_cyclic_score_needs_every_shifted_copy_right(tmp_path: Path) -> None:
    _hrbench_benchmark(tmp_path)
    config = _eval_config("hrbench", tmp_path, tmp_path / "out")
    # question 1: all right; question 2: its copy in cycle 2 wrong; question 3: one copy unreadable
    pool = AnswerPool(wrong=frozenset({"hrbench_4k_1002"}))

    summaries = run_eval(pool, config)  # type: ignore[arg-type]

    for summary in summaries:
        assert (summary["samples"], summary["correct"], summary["failed"]) == (12, 10, 1)
        assert summary["accuracy"] == pytest.approx(10 / 12)
        assert (summary["questions"], summary["consistent"]) == (3, 1)
        assert summary["cyclic_accuracy"] == pytest.approx(1 / 3)
        cycles = summary["cycles"]
        assert sorted(cycles) == ["cycle_1", "cycle_2", "cycle_3", "cycle_4"]
        assert [cycles[c]["correct"] for c in sorted(cycles)] == [3, 2, 2, 3]
        assert summary["cycle_mean_accuracy"] == pytest.approx((1 + 2 / 3 + 2 / 3 + 1) / 4)
        assert summary["categories"]["single"]["cyclic_accuracy"] == pytest.approx(1 / 2)
        assert summary["categories"]["cross"]["cyclic_accuracy"] == 0.0
        rows = pq.read_table(tmp_path / "out" / summary["parquet"]).to_pylist()
        assert len({r["question_group"] for r in rows}) == 3
        assert {r["cycle"] for r in rows if r["failure"]} == {"cycle_3"}
        metrics = summary_metrics(summary)
        assert metrics[f"eval/{summary['mode']}/cyclic_accuracy"] == pytest.approx(1 / 3)
        assert "cyclic (every shifted copy right): 0.333 (1/3 questions)" in format_summary(summary)


def test_an_engine_failure_makes_its_question_wrong_under_the_cyclic_score(
    tmp_path: Path,
) -> None:
    _hrbench_benchmark(tmp_path)
    config = _eval_config("hrbench", tmp_path, tmp_path / "out", modes=("single-stage",))

    pool = AnswerPool(failing=frozenset({"hrbench_4k_1"}))
    [summary] = run_eval(pool, config)  # type: ignore[arg-type]

    assert (summary["samples"], summary["failed"], summary["questions"]) == (12, 2, 3)
    assert summary["consistent"] == 1  # question 2 only: 1 failed in the engine, 3 unreadable
    assert {f["id"] for f in summary["failures"]} == {"hrbench_4k_1", "hrbench_4k_2003"}


def test_cyclic_block_counts_questions_not_rows() -> None:
    records = [
        EvalRecord("a1", "c", "A", "A", True, question_group="a"),
        EvalRecord("a2", "c", "B", "B", True, question_group="a"),
        EvalRecord("b1", "c", "A", "A", True, question_group="b"),
        EvalRecord("b2", "c", "C", failure="unreadable", question_group="b"),
        EvalRecord("lone", "c", "A", "A", True),  # no group: its own question
    ]
    summary = summarize(records, {"mode": "single-stage", "max_vision_tokens": 64})
    assert (summary["questions"], summary["consistent"]) == (3, 2)
    assert summary["cyclic_accuracy"] == pytest.approx(2 / 3)
    assert "cycles" not in summary


# --- protocol options ------------------------------------------------------------------------

REQUIRED = ["--dataset", "vstar", "--data-root", "v", "--model", "m"]


def test_eval_defaults_to_1024_new_tokens_and_eager_engines() -> None:
    config, _ = parse_args(REQUIRED)
    assert config.max_new_tokens == 1024
    assert all(e.max_new_tokens == 1024 for e in config.episodes())
    assert config.engine().enforce_eager is True
    fast, _ = parse_args([*REQUIRED, "--enforce-eager", "false"])
    assert fast.engine().enforce_eager is False


def _released_prompts(tmp_path: Path, marker: str) -> Path:
    """The default templates with `marker` opening every user turn."""
    import tomllib

    from core.prompts import DEFAULT_PROMPTS

    templates = tomllib.loads(DEFAULT_PROMPTS.read_text())
    lines = [f"system = {json.dumps(templates['system'])}"]
    for name in ("coarse", "fine", "fine_free_form", "verifier"):
        lines.append(f"{name} = {json.dumps(marker + ' ' + templates[name])}")
    file = tmp_path / "released.toml"
    file.write_text("\n".join(lines) + "\n")
    return file


def test_eval_prompts_are_checked_at_start_and_made_absolute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _released_prompts(tmp_path, "RELEASED")
    monkeypatch.chdir(tmp_path)
    config, _ = parse_args([*REQUIRED, "--prompts", "released.toml"])
    assert config.prompts == str(tmp_path / "released.toml")
    (tmp_path / "typo.toml").write_text(
        (tmp_path / "released.toml").read_text().replace("{question}", "{qestion}", 1)
    )
    for bad, complaint in [
        ("missing.toml", "No such file"),
        ("typo.toml", "unknown placeholder 'qestion'"),
    ]:
        with pytest.raises(SystemExit) as exited:
            parse_args([*REQUIRED, "--prompts", bad])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert f"prompt file {bad}" in err and complaint in err


def test_eval_prompts_reach_the_episodes_of_both_modes(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """What `make_eval_pool` gives every worker: the episodes run under the file's texts."""
    from actors.engine import EngineConfig
    from actors.rollout_worker import EpisodeRequest, RolloutWorker

    prompts = _released_prompts(tmp_path, "RELEASED-CHECKPOINT")
    argv = [*REQUIRED, "--prompts", str(prompts), "--max-new-tokens", "4"]
    config, _ = parse_args(
        [*argv, "--max-vision-tokens", "16", "--modes", '["two-stage", "single-stage"]']
    )
    engine = EngineConfig(backend="hf", model=str(tiny_model_dir), max_model_len=1024)
    worker = RolloutWorker(engine, config.prompts)

    for episode in config.episodes():
        [t] = worker.run([EpisodeRequest(_sample(1), episode)])
        assert t.failure is None
        text = worker.chat.decode(t.token_ids)
        turns = 2 if episode.mode == "two-stage" else 1
        assert text.count("RELEASED-CHECKPOINT") == turns
