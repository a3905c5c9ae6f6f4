"""MLflow for the train job: one run per job, resumable, and a do-nothing tracker for tests.

Default store: a sqlite database and an artifact folder in the run directory; any tracking URI
(a team's `mlflow server`) works the same. A resumed job reopens its run by id and never logs
a step twice: steps up to the last one already in the run are skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)
_PARAMS_PER_CALL = 100  # MLflow's batch limit


class Tracker(Protocol):
    run_id: str

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: Path, folder: str) -> None: ...
    def end(self, status: str) -> None: ...


class MLflowTracker:
    """An MLflow run (new, or reopened by `run_id`)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        artifact_dir: Path,
        run_id: str | None = None,
        run_name: str | None = None,
    ) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=artifact_dir.resolve().as_uri())
        mlflow.set_experiment(experiment)
        run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name)
        self.run_id: str = run.info.run_id
        self.last_logged = self._last_logged_step() if run_id else -1
        logger.info("MLflow run %s at %s", self.run_id, tracking_uri)

    def log_params(self, params: dict[str, str]) -> None:
        items = [(k, v[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(items), _PARAMS_PER_CALL):
            self.mlflow.log_params(dict(items[start : start + _PARAMS_PER_CALL]))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step <= self.last_logged:
            return  # logged before the job was interrupted: never twice
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: Path, folder: str) -> None:
        if path.is_dir():
            self.mlflow.log_artifacts(str(path), folder)
        else:
            self.mlflow.log_artifact(str(path), folder)

    def end(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)

    def _last_logged_step(self) -> int:
        client = self.mlflow.tracking.MlflowClient()
        history = client.get_metric_history(self.run_id, "reward/total")
        return max((m.step for m in history), default=-1)
