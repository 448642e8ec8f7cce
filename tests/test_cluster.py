"""Where a process stands among the processes of a training: found from settings, torchrun's
or flexseg-launch's variables, or SLURM's; and the SLURM jobs that start them."""

from __future__ import annotations

import pytest

from flexseg.cluster import PORT_BASE, PORT_SPAN, Processes, find_processes, first_host
from flexseg.commands._compose import CONF_DIR
from flexseg.commands.launch import process_env
from flexseg.errors import ConfigError

pytestmark = pytest.mark.once

SLURM_STEP = {
    "SLURM_JOB_ID": "4242",
    "SLURM_NTASKS": "8",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_STEP_NODELIST": "gpu[07-08]",
}


def test_one_process_unless_told_otherwise():
    assert find_processes(environ={}) == Processes()
    assert not find_processes(environ={"WORLD_SIZE": "1", "RANK": "0"}).several
    # sbatch's own script (no job step) is one process, whatever --ntasks says
    assert not find_processes(environ={"SLURM_JOB_ID": "1", "SLURM_NTASKS": "4"}).several


def test_the_launchers_variables():
    found = find_processes(environ=process_env(1, 2, 29400, base={}))
    assert (found.rank, found.count, found.local_rank, found.local_count) == (1, 2, 1, 2)
    assert found.coordinator == "127.0.0.1:29400" and not found.main


def test_a_slurm_step_meets_on_its_first_node_and_a_port_of_its_own():
    found = find_processes(environ=SLURM_STEP)
    assert (found.rank, found.count, found.local_rank) == (5, 8, 1)
    assert found.coordinator == f"gpu07:{PORT_BASE + 4242 % PORT_SPAN}"
    other_job = find_processes(environ={**SLURM_STEP, "SLURM_JOB_ID": "4243"})
    assert other_job.port != found.port  # each job of a sweep meets on its own port


def test_a_job_of_submitits_local_executor():
    env = {"SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_GLOBALID": "1",
           "SUBMITIT_LOCAL_LOCALID": "1", "SUBMITIT_LOCAL_JOB_ID": "777"}  # fmt: skip
    found = find_processes(environ=env)
    assert (found.rank, found.count, found.coordinator) == (1, 2, f"127.0.0.1:{PORT_BASE + 777}")


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [("node001", "node001"), ("a1,b2", "a1"), ("gpu[07-09,12],cpu1", "gpu07"), ("n[3,5]", "n3")],
)
def test_the_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_explicit_settings_come_first_and_are_checked():
    found = find_processes("node01:1234", 4, 3, environ=SLURM_STEP)
    assert (found.rank, found.count, found.coordinator) == (3, 4, "node01:1234")
    with pytest.raises(ConfigError, match=r"trainer.cluster.coordinator, .*process_id not set"):
        find_processes(num_processes=2, environ={})
    with pytest.raises(ConfigError, match="process_id=2 is not a process of .*num_processes=2"):
        find_processes("node01:1234", 2, 2, environ={})
    with pytest.raises(ConfigError, match="is not host:port"):
        find_processes("node01", 2, 0, environ={})
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not a number"):
        find_processes(environ={"WORLD_SIZE": "two", "RANK": "0"})


def test_the_slurm_launcher_asks_for_nodes_and_a_task_per_gpu(tmp_path, monkeypatch):
    """nodes=2 tasks_per_node=4 composes into the sbatch lines submitit writes (no cluster)."""
    monkeypatch.setattr("shutil.which", lambda name, *args, **kwargs: f"/usr/bin/{name}")
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    from flexseg.commands._compose import register

    register()
    overrides = [
        "hydra/launcher=slurm",
        "hydra.launcher.nodes=2",
        "hydra.launcher.tasks_per_node=4",
        "hydra.launcher.gpus_per_node=4",
        f"hydra.sweep.dir={tmp_path}",
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 4, 4)
    # As hydra-submitit-launcher hands them to submitit: queue keys plain, the rest slurm_*.
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(cluster="slurm", folder=tmp_path / "submitit")
    executor.update_parameters(
        **{
            key if key in base else f"slurm_{key}": value
            for key, value in params.items()
            if key not in {"_target_", "submitit_folder", "max_num_timeout"}
        }
    )
    script = executor._executor._make_submission_file_text("python train.py", "0")
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--signal=USR2@120"):
        assert f"#SBATCH {line}" in script, script
    assert "srun" in script  # every task runs the job: the tasks find each other (flexseg.cluster)
