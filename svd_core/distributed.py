"""Sweeps over several processes (GPUs, machines) with Hugging Face accelerate.

`accelerate launch [--multi_gpu] [--num_processes N] -m svd_core sweep ...` starts one process per device; each
loads the model once on its accelerate device (`PartialState().device`), samples its share of the cells
(`assign`: balanced by cost), and sends what it made to the main process as Python objects
(`torch.distributed.gather_object`: no shared filesystem needed between machines). The main process alone
writes the sweep folder, exactly as a one-process sweep does.
"""

from __future__ import annotations

import os
import re
import socket
from datetime import timedelta

TIMEOUT_ENV = "SVD_SWEEP_TIMEOUT_S"  # how long a process waits for the others (a hung, not dead, process)
DEFAULT_TIMEOUT_S = 6 * 3600


SIZE_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")  # torchrun, then MPI's
RANK_ENV = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def _env_int(names, default: int) -> int:
    return next((int(os.environ[n]) for n in names if os.environ.get(n, "").isdigit()), default)


def world_size() -> int:
    """Processes of this launch, from the launcher's environment (accelerate's torchrun or MPI): 1 outside one."""
    return _env_int(SIZE_ENV, 1)


def env_rank() -> int:
    return _env_int(RANK_ENV, 0)


def launched() -> bool:
    """True inside `accelerate launch` (or torchrun, or mpirun) with more than one process."""
    return world_size() > 1


def process_state():
    """accelerate's PartialState, with the process group's timeout from $SVD_SWEEP_TIMEOUT_S (default 6 h: the
    processes wait for each other only at the end, a long sweep's imbalance included). A dead process is not
    waited for: its connection closes and the launcher stops the rest."""
    import torch
    from accelerate import PartialState

    from .errors import SVDError

    seconds = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)
    # No GPU: the processes share the CPU over gloo (accelerate's MULTI_CPU); PartialState takes that path only
    # when asked for the CPU, else it quietly makes each process a one-process run of the whole sweep.
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu, timeout=timedelta(seconds=seconds))
    if state.num_processes != world_size():
        raise SVDError(f"accelerate made a group of {state.num_processes} of the {world_size()} processes launched "
                       f"({state.distributed_type}): launch with --multi_gpu (GPUs, or the CPU when there is none) "
                       "or torchrun")
    if state.device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        # several processes on one CPU: split its cores instead of oversubscribing (torchrun, under accelerate
        # launch --multi_gpu, already sets OMP_NUM_THREADS=1 per process when unset; a value set is kept)
        local = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local)))
    return state


def process_record(state=None) -> dict:
    """What each cell's run.json says about the process that made it: rank, number of processes, host, torch
    threads. A one-process sweep records rank 0 of 1 and its host too: one schema to read, and the host is worth
    knowing on a shared machine as well."""
    import torch

    rank, n = (state.process_index, state.num_processes) if state is not None else (0, 1)
    # torch's CPU threads: on the CPU the frames depend on them (parallel sums round differently)
    return {"rank": rank, "processes": n, "host": socket.gethostname(), "threads": torch.get_num_threads()}


def cell_cost(params) -> float:
    """A cell's relative cost: pixels x frames x UNet evaluations (model calls per step, times two for guidance
    unless the identity guider) x videos."""
    from .samplers import get_sampler

    calls = get_sampler(params.sampler).model_calls(params.num_inference_steps)
    batch = 1 if params.guider == "identity" else 2
    return float(params.width * params.height * params.num_frames * calls * batch * params.num_videos)


def assign(cells, num_processes: int) -> list[list[int]]:
    """Cell indices per process, balanced by `cell_cost` (longest first onto the least-loaded process; ties go
    to the lower rank, so every process computes the same plan). Each process's list is in sweep order."""
    loads = [0.0] * num_processes
    plan: list[list[int]] = [[] for _ in range(num_processes)]
    costs = [cell_cost(params) for _, params in cells]
    for idx in sorted(range(len(cells)), key=lambda i: (-costs[i], i)):
        rank = min(range(num_processes), key=lambda r: (loads[r], r))
        plan[rank].append(idx)
        loads[rank] += costs[idx]
    return [sorted(p) for p in plan]


def gather_to_main(outcomes: dict, state) -> dict | None:
    """Every process's {cell index: outcome} merged on the main process (None on the others). Objects go
    through torch.distributed.gather_object (to the main process only: the frames are not copied to every
    process as accelerate's all-gather `gather_object` would). A process that died or lost contact raises
    ProcessLost."""
    import torch.distributed as dist

    from .errors import ProcessLost

    parts = [None] * state.num_processes if state.is_main_process else None
    try:
        dist.gather_object(outcomes, parts, dst=0)
    except Exception as e:  # gloo/nccl: connection closed by a dead peer, or the timeout
        raise ProcessLost(f"a sweep process died or stopped answering ({_first_line(e)}): nothing was saved"
                          ) from None
    if not state.is_main_process:
        return None
    merged = {}
    for part in parts:
        merged.update(part)
    return merged


def _first_line(e: BaseException) -> str:
    """gloo's "[.../pair.cc:553] Connection closed by peer [127.0.0.1]:35724. This is typically ..." ->
    "RuntimeError: Connection closed by peer [127.0.0.1]:35724"."""
    lines = str(e).strip().splitlines()
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[0] if lines else "").split(". ")[0]
    return f"{type(e).__name__}: {text}"[:300]
