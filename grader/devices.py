"""Which device a kernel runs on: ``--device cpu|gpu|auto``.

**GPU support is implemented but unverified**: it was written and unit-tested
with a fake ``nvidia-smi`` and fake device nodes; no GPU was available to run a
real notebook on one. See README.md, "GPU and clusters".

* :func:`discover_gpus` asks ``nvidia-smi --query-gpu=index,uuid,memory.total``
  (no ``nvidia-smi`` on PATH: no GPU). Where ``CUDA_VISIBLE_DEVICES`` is already
  set in the grader's (or a Dask worker's) environment to GPU indices, only those
  GPUs are used, in that order (so each dask-cuda worker starts on its own GPU).
* :func:`resolve_device`: ``auto`` is ``gpu`` when a GPU is found, else ``cpu``;
  ``gpu`` with no GPU is a :class:`~grader.errors.ConfigurationError`.
* :func:`kernel_options` gives one kernel its GPU, round-robin by a slot number
  (several kernels may share one GPU; ``TF_FORCE_GPU_ALLOW_GROWTH`` keeps each from
  taking all its memory). The kernel's environment gets ``CUDA_VISIBLE_DEVICES``
  (the GPU's UUID when ``nvidia-smi`` reports it, else its index),
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (so an index means what ``nvidia-smi`` says) and
  ``TF_FORCE_GPU_ALLOW_GROWTH=true``; the sandbox passes through only
  ``/dev/nvidiactl``, ``/dev/nvidia-uvm``, ``/dev/nvidia-uvm-tools`` and
  ``/dev/nvidia<index>``, where they exist. The result records ``gpu:<index>``.

The UUID is used because only one ``/dev/nvidia<index>`` is visible in the sandbox:
whether CUDA then still numbers GPUs as ``nvidia-smi`` does is exactly what could
not be checked here, and a UUID names the GPU either way.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .errors import ConfigurationError

QUERY = ["--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"]
SHARED_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")


@dataclass(frozen=True)
class Gpu:
    index: int
    memory_mb: int = 0
    uuid: str = ""


def discover_gpus() -> tuple[Gpu, ...]:
    """The GPUs this machine offers (none when ``nvidia-smi`` is absent or fails)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        answer = subprocess.run([smi, *QUERY], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if answer.returncode != 0:
        return ()
    gpus = parse_query(answer.stdout)
    return _only_visible(gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))


def parse_query(text: str) -> tuple[Gpu, ...]:
    """Lines of ``index, uuid, memory.total`` (units or not); unreadable lines are skipped."""
    gpus = []
    for line in text.splitlines():
        fields = [part.strip() for part in line.split(",")]
        if not fields or not fields[0].isdigit():
            continue
        uuid = next((f for f in fields[1:] if f.startswith(("GPU-", "MIG-"))), "")
        numbers = [f for f in fields[1:] if re.fullmatch(r"\d+(\s*MiB)?", f)]
        memory = int(numbers[0].split()[0]) if numbers else 0
        gpus.append(Gpu(index=int(fields[0]), memory_mb=memory, uuid=uuid))
    return tuple(gpus)


def _only_visible(gpus: tuple[Gpu, ...], visible: str | None) -> tuple[Gpu, ...]:
    """Honour a CUDA_VISIBLE_DEVICES of indices or UUIDs already set ("" or -1: none)."""
    if visible is None:
        return gpus
    wanted = [part.strip() for part in visible.split(",") if part.strip()]
    if not wanted or wanted[0].startswith("-"):
        return ()
    by_key = {str(g.index): g for g in gpus} | {g.uuid: g for g in gpus if g.uuid}
    if not all(key in by_key for key in wanted):
        return gpus  # a form we cannot map (MIG, partial UUIDs): use what nvidia-smi says
    return tuple(dict.fromkeys(by_key[key] for key in wanted))


def device_nodes(index: int, dev: Path = Path("/dev")) -> tuple[str, ...]:
    """The device nodes a kernel on GPU ``index`` needs, those that exist."""
    names = [*SHARED_NODES, f"nvidia{index}"]
    return tuple(str(dev / name) for name in names if (dev / name).exists())


def resolve_device(requested: str, gpus: tuple[Gpu, ...] | None = None) -> str:
    """``cpu`` or ``gpu`` for this machine; ``auto`` picks ``gpu`` when there is one."""
    if requested == "cpu":
        return "cpu"
    found = discover_gpus() if gpus is None else gpus
    if found:
        return "gpu"
    if requested == "auto":
        return "cpu"
    raise ConfigurationError("--device gpu, but no GPU was found here (nvidia-smi is "
                             f"{'not on PATH' if shutil.which('nvidia-smi') is None else 'listing none'}"
                             "). Use --device auto to fall back to the CPU.")


def kernel_options(options, slot: int, gpus: tuple[Gpu, ...] | None = None,
                   dev: Path = Path("/dev")):
    """``options`` for one kernel: ``cpu``, or one GPU chosen round-robin by ``slot``.

    Options already pinned (``cpu``, ``gpu:N``) are returned unchanged."""
    if options.device not in ("gpu", "auto"):
        return options
    found = discover_gpus() if gpus is None else gpus
    if resolve_device(options.device, found) == "cpu":
        return replace(options, device="cpu")
    gpu = found[slot % len(found)]
    env = dict(options.kernel_env)
    env.update({"CUDA_VISIBLE_DEVICES": gpu.uuid or str(gpu.index),
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "TF_FORCE_GPU_ALLOW_GROWTH": "true"})
    return replace(options, device=f"gpu:{gpu.index}", gpu_devices=device_nodes(gpu.index, dev),
                   kernel_env=tuple(env.items()))


def assigner(options, start: int = 0) -> Callable[[], object]:
    """A thread-safe callable giving successive kernels their options (GPUs discovered once).

    ``start`` offsets the round-robin, so that several grading processes on one machine
    do not all begin on GPU 0."""
    if options.device not in ("gpu", "auto"):
        return lambda: options
    gpus = discover_gpus()
    lock = threading.Lock()
    counter = [start]

    def next_options():
        with lock:
            slot = counter[0]
            counter[0] += 1
        return kernel_options(options, slot, gpus)

    return next_options
