"""Ray's own autoscaler on this machine: a head started with `ray start --autoscaling-config`
and the fake multi-node provider, which launches each worker node as a raylet here.

This is what `ray.cluster_utils.AutoscalingCluster` does, less two things that do not fit a
test suite: it runs `ray stop --force` (every Ray on the machine), and it reads an example
config its wheel does not ship. Here the head gets its own port and temp folder, the config is
written out whole, and `shutdown` ends only this cluster's processes. The autoscaler is the real
one (the v1 monitor); only the node provider is fake. Worker node ids are fixed by the provider
(`fff...00001`, `fff...00002`, ... in launch order), and `kill_node` ends one node's processes
at once (SIGKILL): a machine that vanished.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

BIN = Path(sys.executable).parent
FAKE_NODE_ENV = "RAY_OVERRIDE_NODE_ID_FOR_TESTING"  # the provider names each node's processes
FAKE_ID_PREFIX = "f" * 40  # the fake provider's node ids (the head's included): f...f00001
# Ray 2.60 turns token authentication on for `ray start`, and for the rest of a process that
# once ran `ray.init()` (it sets RAY_AUTH_MODE=token in os.environ, which drivers started later
# inherit). A driver and a cluster that disagree fail oddly: actors are destroyed as out of
# scope the moment they are made. This cluster runs without it, and `connect` makes this
# process (and the drivers it starts) agree until `disconnect`.
AUTH_MODE = "RAY_AUTH_MODE"
# Under `uv run`, Ray ships a driver's folder to every worker and starts each worker with its
# own `uv run` there; many workers starting at once then race to build one virtual environment
# and import half-written packages. The cluster's workers run this machine's .venv instead.
UV_HOOK = "RAY_ENABLE_UV_RUN_RUNTIME_ENV"
ENV = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", AUTH_MODE: "disabled"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.5
) -> Any:
    """Poll `condition` every `every_s` until it is truthy; fail naming `what` after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(every_s)
    return value


class FakeAutoscalingCluster:
    """A head with `head_cpus` CPUs (and no custom resource) and `node_types`, the autoscaler's
    `available_node_types` for workers (each: resources, min_workers, max_workers)."""

    def __init__(
        self,
        temp_dir: Path,
        head_cpus: float,
        node_types: dict[str, dict[str, Any]],
        idle_timeout_minutes: float,
    ) -> None:
        self.temp_dir = temp_dir
        self.head_cpus = head_cpus
        self.node_types = node_types
        self.idle_timeout_minutes = idle_timeout_minutes
        self.address = ""
        self._saved: dict[str, str | None] = {}  # this process's env before `connect`

    def start(self) -> str:
        """Start the head and its autoscaler; returns the GCS address."""
        from ray._private.services import get_node_ip_address

        port = _free_port()
        self.address = f"{get_node_ip_address()}:{port}"
        config_path = self.temp_dir / "autoscaler.json"
        config_path.write_text(json.dumps(self._config()))
        command = [
            str(BIN / "ray"), "start", "--head", "--port", str(port),
            f"--autoscaling-config={config_path}", f"--num-cpus={self.head_cpus}",
            "--temp-dir", str(self.temp_dir / "ray"), "--include-dashboard", "false",
            "--disable-usage-stats",
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, **ENV})
        return self.address

    def connect(self) -> None:
        """Start the cluster and connect this process to it, without authentication."""
        address = self.start()
        self._saved = {key: os.environ.get(key) for key in (AUTH_MODE, UV_HOOK)}
        _set_env({AUTH_MODE: "disabled", UV_HOOK: "0"})
        import ray

        ray.init(address=address, log_to_driver=False)

    def disconnect(self) -> None:
        """Disconnect this process, restore its authentication mode, end the cluster."""
        import ray

        ray.shutdown()
        _set_env(self._saved)
        self.shutdown()

    def worker_nodes(self) -> list[str]:
        """The ids of the live worker nodes (the head excluded), as the GCS reports them."""
        import ray

        return sorted(
            node["NodeID"]
            for node in ray.nodes()
            if node["Alive"] and not node["Resources"].get("node:__internal_head__")
        )

    def kill_node(self, node_id: str) -> int:
        """SIGKILL every process of one worker node (raylet, workers, agents) at once;
        returns how many."""
        victims = [p for p in self._processes() if node_id in _node_ids(p)]
        for process in victims:
            process.kill()
        return len(victims)

    def shutdown(self) -> None:
        """End this cluster's processes (head and worker nodes) and nothing else; again
        until none is left, as a node the autoscaler was launching may still start some."""
        for _ in range(20):
            processes = self._processes()
            if not processes:
                return
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    process.kill()
            time.sleep(0.5)

    def _processes(self) -> list[psutil.Process]:
        """Processes started for this cluster: those with its temp folder on their command
        line or a file open in it (every node logs into the head's session folder), and those
        of a node with a fake provider's id."""
        mine = []
        folder = str(self.temp_dir)
        for process in psutil.process_iter():
            try:
                ours = folder in " ".join(process.cmdline()) or _writes_under(process, folder)
            except psutil.Error:
                continue
            ours = ours or any(n.startswith(FAKE_ID_PREFIX) for n in _node_ids(process))
            if ours and process.pid != os.getpid():
                mine.append(process)
        return mine

    def _config(self) -> dict[str, Any]:
        head = {"resources": {"CPU": self.head_cpus}, "node_config": {}, "max_workers": 0}
        workers = {
            name: {"node_config": {}, "min_workers": 0, **spec}
            for name, spec in self.node_types.items()
        }
        return {
            "cluster_name": "fake",
            "max_workers": sum(t["max_workers"] for t in self.node_types.values()),
            "provider": {
                "type": "fake_multinode",
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
                "gcs_address": self.address,
            },
            "available_node_types": {"ray.head.default": head, **workers},
            "head_node_type": "ray.head.default",
            "auth": {},
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": self.idle_timeout_minutes,
            "docker": {},
            **{key: [] for key in ("initialization_commands", "setup_commands")},
            **{key: [] for key in ("head_setup_commands", "worker_setup_commands")},
            **{key: [] for key in ("head_start_ray_commands", "worker_start_ray_commands")},
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
        }


def _node_ids(process: psutil.Process) -> set[str]:
    """The Ray node ids in a process's environment: a raylet's and its workers' (set by the
    provider), and its agents' (set by the raylet). Read from /proc directly: Ray's agents
    rename themselves with setproctitle, which blanks the start of that block, and psutil
    then reads it as empty."""
    try:
        block = Path(f"/proc/{process.pid}/environ").read_bytes()
    except OSError:
        return set()
    entries = (item.decode(errors="replace").partition("=") for item in block.split(b"\0"))
    return {value for key, _, value in entries if key in (FAKE_NODE_ENV, "RAY_NODE_ID")}


def _writes_under(process: psutil.Process, folder: str) -> bool:
    """Whether the process holds a file open under `folder` (its logs, for Ray's agents)."""
    return any(f.path.startswith(folder) for f in process.open_files())


def _set_env(values: dict[str, str | None]) -> None:
    """Set (None: unset) these variables for this process and the drivers it starts, and make
    Ray in this process follow them (it read both when it was imported)."""
    from ray._private import ray_constants
    from ray._raylet import AuthenticationTokenLoader, Config

    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = os.environ.get(UV_HOOK, "1") != "0"
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
