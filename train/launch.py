"""The ``accelerate launch`` command that really starts N trainer processes on this machine.

accelerate's own ``--cpu --num_processes N`` starts ONE process unless it is also given an MPI
hostfile (accelerate 1.x: its simple launcher expects mpirun to fan out), so N CPU processes go
through torchrun (``--multi_gpu``) with ``ACCELERATE_USE_CPU=1``: every process then joins one
gloo group. On GPUs ``--multi_gpu`` is accelerate's usual NCCL path.
"""
from __future__ import annotations

import os
import socket
import sys

TRAINER_MODULE = "dense_face.train.trainer"
SINGLE_CPU_PROCESS_HINT = (
    "dense-face train: running ONE process although a multi-process launch was asked for: `accelerate launch "
    "--cpu --num_processes N` starts one process unless it is given an MPI hostfile. For N CPU processes on one "
    "machine: ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N ...")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(processes: int, *, cpu: bool, mixed_precision: str = "no",
                   port: int | None = None) -> tuple[list[str], dict[str, str]]:
    """``(argv up to the trainer's own arguments, environment)`` for ``processes`` processes on one machine;
    CPU processes get one thread each (more only fight over the same cores)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", mixed_precision, "--dynamo_backend", "no",
           "--main_process_port", str(port or free_port())]
    env = dict(os.environ)
    if processes > 1:
        cmd.append("--multi_gpu")
        if cpu:
            env["ACCELERATE_USE_CPU"] = "1"
    elif cpu:
        cmd.append("--cpu")
    if cpu:
        env["OMP_NUM_THREADS"] = "1"
    return cmd + ["-m", TRAINER_MODULE], env


def asked_for_more_processes(world: int) -> bool:
    """True in a one-process run that accelerate's simple launcher started for ``--num_processes N > 1``
    (it sets MASTER_PORT for the processes it did not start; torchrun would have set WORLD_SIZE)."""
    return world == 1 and "MASTER_PORT" in os.environ and "WORLD_SIZE" not in os.environ \
        and os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
