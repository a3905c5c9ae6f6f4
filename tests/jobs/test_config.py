"""Every config file and documented example parses; overrides and errors behave."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from core.prompts import PromptTemplates
from jobs.config import ConfigError, TrainConfig, flatten, load_config, parse_overrides

ROOT = Path(__file__).parents[2]
ALL_CONFIGS = sorted((ROOT / "configs").glob("*.toml"))
PROMPTS = sorted((ROOT / "configs" / "prompts").glob("*.toml"))
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```toml\n(.*?)^```", re.DOTALL | re.MULTILINE)
EXAMPLES = [
    pytest.param(text, id=f"{doc.name}:{n}")
    for doc in DOCS
    for n, text in enumerate(FENCE.findall(doc.read_text()))
]
SERVE_CONFIGS = [p for p in ALL_CONFIGS if p.name.startswith("serve")]  # `jobs.serve`'s
CONFIGS = [p for p in ALL_CONFIGS if p not in SERVE_CONFIGS]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_parses(path: Path) -> None:
    config = load_config(path)
    assert config.rollout.engine.model.endswith(Path(config.model).name)
    assert config.learner.model == config.rollout.engine.model
    assert flatten(config)["train.steps"] == str(config.train.steps)


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_every_serve_config_file_parses(path: Path) -> None:
    from jobs.serve import load_serve_config

    config = load_serve_config(path, overrides=["--http.port", "8123"])
    assert config.engine.model == config.model
    assert config.http.port == 8123
    assert config.autoscaling.max_replicas >= config.autoscaling.min_replicas
    assert load_serve_config(path, model="other/model").engine.model == "other/model"


@pytest.mark.parametrize("path", PROMPTS, ids=lambda p: p.name)
def test_every_prompts_file_loads(path: Path) -> None:
    PromptTemplates.load(path)


def merged(base: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in fragment.items():
        old = out.get(key)
        out[key] = (
            merged(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        )
    return out


def test_the_docs_hold_toml_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("text", EXAMPLES)
def test_every_toml_example_in_the_docs_is_a_valid_train_config_fragment(text: str) -> None:
    """Each ```toml block of README.md and docs/*.md, merged into a minimal config."""
    TrainConfig.model_validate(merged({"model": "some/model"}, tomllib.loads(text)))


def test_an_unknown_reward_name_fails_at_load_listing_the_known_ones(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "m"\n[rewards.weights]\naccuracy = 1.0\nnovelty = 0.5\n')
    with pytest.raises(ConfigError, match=r"rewards\.weights: .*novelty.*known: \['accuracy'"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"rewards\.weights.*novelty"):
        load_config(ROOT / "configs" / "demo.toml", ["--rewards.weights.novelty", "1.0"])


def test_the_train_job_exits_2_on_a_bad_config_before_ray_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "m"\n[rewards.weights]\nnovelty = 0.5\n')
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "jobs.train", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "rewards.weights" in done.stderr and "novelty" in done.stderr
    assert "Started a local Ray instance" not in done.stderr + done.stdout
    assert time.monotonic() - start < 60


def test_verifier_settings_live_in_one_section() -> None:
    config = load_config(ROOT / "configs" / "qwen2_5_vl_7b.toml")
    assert config.rewards.verifier is not None
    assert config.rewards.verifier.workers == 1
    assert config.rewards.verifier.resources.num_gpus == 4


def test_configs_folder_has_the_demo_and_the_7b_recipe() -> None:
    assert {p.name for p in CONFIGS} >= {"demo.toml", "qwen2_5_vl_7b.toml"}


def test_7b_recipe_keeps_ergo_defaults() -> None:
    config = load_config(Path(__file__).parents[2] / "configs" / "qwen2_5_vl_7b.toml")
    assert config.episode.coarse_max_tokens == 1280
    assert config.rewards.verifier is not None
    assert config.rewards.verifier.engine.model == "Qwen/Qwen2.5-VL-72B-Instruct"
    grpo = config.learner.grpo
    assert (grpo.kl_beta, grpo.kl_estimator, grpo.clip_low, grpo.clip_high) == (
        0.04,
        "k3",
        0.2,
        0.2,
    )
    assert config.rewards.weights["region"] == 1.0
    assert config.rewards.weights["box"] == 0.5


SOURCES = ("[paper]", "[VLM-R1]", "[TRL]", "[ours]")
SOURCED_SECTIONS = ("", "[rollout.episode]", "[learner.optim]", "[learner.grpo]", "[train]")
TRAIN_SOURCED = ("steps", "prompts_per_step")


def test_7b_config_states_the_source_of_every_hyperparameter() -> None:
    """The paper publishes few hyperparameters: each one the 7B config sets says where it
    comes from (the paper, VLM-R1, TRL's defaults, or our choice)."""
    path = ROOT / "configs" / "qwen2_5_vl_7b.toml"
    config = load_config(path)
    assert (config.learner.grpo.old_logprobs, config.learner.grpo.tis_cap) == ("learner", 2.0)
    assert config.learner.weight_transport == "auto"
    section, unsourced = "", []
    for line in path.read_text().splitlines():
        key = line.split("=")[0].strip()
        if line.startswith("["):
            section = line.strip()
        elif "=" in line and not line.startswith("#") and _sourced(section, key):
            unsourced += [] if any(s in line for s in SOURCES) else [f"{section} {key}"]
    assert not unsourced, unsourced
    assert "NOT the paper's\n# recipe" in path.read_text()


def _sourced(section: str, key: str) -> bool:
    """Hyperparameters (not paths, resources or logging cadence) must name their source."""
    return section in SOURCED_SECTIONS and (section != "[train]" or key in TRAIN_SOURCED)


def test_dotted_overrides_are_typed() -> None:
    config = load_config(
        CONFIGS[0].parent / "demo.toml",
        ["--learner.optim.lr", "3e-5", "--train.steps", "2", "--tracking.run_name", "x"],
    )
    assert config.learner.optim.lr == 3e-5
    assert config.train.steps == 2
    assert config.tracking.run_name == "x"
    assert parse_overrides(["--a.b", "true", "--c", "[1, 2]"]) == [("a.b", True), ("c", [1, 2])]


def test_the_run_seed_seeds_the_rollout_unless_the_episode_has_its_own() -> None:
    demo = CONFIGS[0].parent / "demo.toml"
    assert load_config(demo, ["--train.seed", "7"]).episode.seed == 7
    both = ["--train.seed", "7", "--rollout.episode.seed", "3"]
    assert load_config(demo, both).episode.seed == 3


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["--learner.optim.lr", "-1"], "learner.optim.lr"),
        (["--train.stpes", "3"], "train.stpes"),
        (["--rollout.episode.group_size", "zero"], "rollout.episode.group_size"),
        (["--data.source", "parquet"], "data"),
    ],
)
def test_bad_values_name_the_field(overrides: list[str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(CONFIGS[0].parent / "demo.toml", overrides)


def test_unreadable_files_and_bad_override_syntax(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("model = [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="pairs"):
        parse_overrides(["--train.steps"])
    with pytest.raises(ConfigError, match="must start with --"):
        parse_overrides(["train.steps", "3"])


def test_the_rollout_job_loads_its_config_like_every_job(tmp_path: Path) -> None:
    import argparse

    from jobs.config import parse_job_args
    from jobs.rollout import RolloutJobConfig

    file = tmp_path / "rollout.toml"
    file.write_text('model = "m"\n[episode]\ngroup_size = 2\n')
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    argv = ["--config", str(file), "--num-samples", "3", "--pool.max_workers", "2"]
    config, _ = parse_job_args(RolloutJobConfig, parser, argv)
    assert config.engine.model == "m" and config.episode.group_size == 2
    assert config.num_samples == 3 and config.pool.max_workers == 2
    with pytest.raises(SystemExit) as exited:
        parse_job_args(RolloutJobConfig, parser, ["--episode.group_sizes", "2"])
    assert exited.value.code == 2


def test_the_warm_start_loads_its_config_like_every_job(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from jobs.config import parse_job_args
    from jobs.sft import SftConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    job, _ = parse_job_args(SftConfig, parser, ["--model", "m", "--out", "o", "--steps", "5"])
    assert (job.model, job.out, job.steps, job.batch) == ("m", "o", 5, 8)
    with pytest.raises(SystemExit) as exited:
        parse_job_args(SftConfig, parser, ["--model", "m"])
    assert exited.value.code == 2 and "out" in capsys.readouterr().err


def test_one_prompts_file_fills_the_policy_and_the_verifier(tmp_path: Path) -> None:
    released = tmp_path / "released.toml"
    released.write_text((ROOT / "configs" / "prompts" / "ergo.toml").read_text())
    demo = ROOT / "configs" / "demo.toml"

    both = load_config(demo, ["--prompts", str(released)])
    own = load_config(demo, ["--prompts", str(released), "--rewards.prompts", str(PROMPTS[0])])
    default = load_config(demo)

    assert both.rollout.prompts == both.rewards.prompts == str(released)
    assert (own.rollout.prompts, own.rewards.prompts) == (str(released), str(PROMPTS[0]))
    assert default.prompts is None and default.rollout.prompts == str(PROMPTS[0])


@pytest.mark.parametrize("field", ["prompts", "rollout.prompts", "rewards.prompts"])
def test_a_missing_or_malformed_prompt_file_exits_2_naming_it(
    tmp_path: Path, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from jobs.config import parse_job_args

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    bad = tmp_path / "bad.toml"
    bad.write_text('system = "s"\ncoarse = "{question}"\n')
    for path, complaint in [(tmp_path / "absent.toml", "No such file"), (bad, "fine: Field")]:
        argv = ["--config", str(ROOT / "configs" / "demo.toml"), f"--{field}", str(path)]
        with pytest.raises(SystemExit) as exited:
            parse_job_args(TrainConfig, parser, argv)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert f"prompt file {path}" in err and complaint in err


def test_staleness_needs_an_off_policy_correction() -> None:
    demo = Path(__file__).parents[2] / "configs" / "demo.toml"
    with pytest.raises(ConfigError, match="tis_cap"):
        load_config(demo, ["--train.max_staleness", "1"])
    config = load_config(demo, ["--train.max_staleness", "1", "--learner.grpo.tis_cap", "2.0"])
    assert config.train.max_staleness == 1
    config = load_config(demo, ["--train.max_staleness", "3", "--learner.grpo.tis_cap", "2.0"])
    assert config.train.max_staleness == 3
    with pytest.raises(ConfigError, match="max_staleness"):
        load_config(demo, ["--train.max_staleness", "-1"])
