"""Every config file parses; overrides and errors behave."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.config import ConfigError, flatten, load_config, parse_overrides

ALL_CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.toml"))
SERVE_CONFIGS = [p for p in ALL_CONFIGS if p.name.startswith("serve")]  # `jobs.serve`'s
CONFIGS = [p for p in ALL_CONFIGS if p not in SERVE_CONFIGS]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_parses(path: Path) -> None:
    config = load_config(path)
    assert config.rollout.engine.model.endswith(Path(config.model).name)
    assert config.learner.learner.model == config.rollout.engine.model
    assert flatten(config)["train.steps"] == str(config.train.steps)


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_every_serve_config_file_parses(path: Path) -> None:
    from jobs.serve import load_serve_config

    config = load_serve_config(path, overrides=["--http.port", "8123"])
    assert config.engine.model == config.model
    assert config.http.port == 8123
    assert config.autoscaling.max_replicas >= config.autoscaling.min_replicas
    assert load_serve_config(path, model="other/model").engine.model == "other/model"


def test_configs_folder_has_the_demo_and_the_7b_recipe() -> None:
    assert {p.name for p in CONFIGS} >= {"demo.toml", "qwen2_5_vl_7b.toml"}


def test_7b_recipe_keeps_ergo_defaults() -> None:
    config = load_config(Path(__file__).parents[2] / "configs" / "qwen2_5_vl_7b.toml")
    assert config.episode.coarse_max_tokens == 1280
    assert config.rewards.verifier is not None
    assert config.rewards.verifier.engine.model == "Qwen/Qwen2.5-VL-72B-Instruct"
    grpo = config.learner.learner.grpo
    assert (grpo.kl_beta, grpo.kl_estimator, grpo.clip_low, grpo.clip_high) == (
        0.04,
        "k3",
        0.2,
        0.2,
    )
    assert config.rewards.rewards.weights["region"] == 1.0
    assert config.rewards.rewards.weights["box"] == 0.5


def test_dotted_overrides_are_typed() -> None:
    config = load_config(
        CONFIGS[0].parent / "demo.toml",
        ["--learner.learner.optim.lr", "3e-5", "--train.steps", "2", "--tracking.run_name", "x"],
    )
    assert config.learner.learner.optim.lr == 3e-5
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
        (["--learner.learner.optim.lr", "-1"], "learner.learner.optim.lr"),
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
