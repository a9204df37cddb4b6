"""--device gpu|auto with a fake nvidia-smi and fake device nodes.

No GPU was available: these tests check the plumbing (discovery, round-robin, the
kernel's environment, the bubblewrap arguments), not that TensorFlow runs on a GPU."""

import shutil
import stat
import threading

import pytest

from grader import devices
from grader.cli import main
from grader.devices import Gpu, assigner, device_nodes, discover_gpus, kernel_options
from grader.errors import ConfigurationError
from grader.executor import GradeOptions
from grader.runner import run_batch
from grader.sandbox import SandboxSpec

from conftest import TOY_COURSE, sandbox_mode

TWO_GPUS = "0, GPU-aaaa-0000, 81559\n1, GPU-bbbb-1111, 81559\n"


def _fake_nvidia_smi(tmp_path, monkeypatch, output=TWO_GPUS, rc=0):
    """A `nvidia-smi` on PATH that records its arguments and prints ``output``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/smi-args\n"
                      f"cat <<'EOF'\n{output}EOF\nexit {rc}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return tmp_path / "smi-args"


def _fake_dev(tmp_path, names=("nvidiactl", "nvidia-uvm", "nvidia0", "nvidia1")):
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in names:
        (dev / name).touch()
    return dev


def test_discovers_gpus_with_the_query_and_parses_units_or_none(tmp_path, monkeypatch):
    args = _fake_nvidia_smi(tmp_path, monkeypatch)
    assert discover_gpus() == (Gpu(0, 81559, "GPU-aaaa-0000"), Gpu(1, 81559, "GPU-bbbb-1111"))
    assert "--query-gpu=index,uuid,memory.total" in args.read_text()
    assert devices.parse_query("3, GPU-x, 16384 MiB\nNo devices were found\n") == \
        (Gpu(3, 16384, "GPU-x"),)


@pytest.mark.parametrize(("visible", "indices"), [("1", [1]), ("1,0", [1, 0]), ("", []),
                                                  ("-1", []), ("GPU-bbbb-1111", [1])])
def test_an_existing_cuda_visible_devices_is_honoured_in_order(tmp_path, monkeypatch, visible,
                                                                indices):
    _fake_nvidia_smi(tmp_path, monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert [gpu.index for gpu in discover_gpus()] == indices


def test_no_nvidia_smi_means_no_gpu_auto_is_cpu_and_gpu_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert discover_gpus() == ()
    assert devices.resolve_device("auto") == "cpu"
    assert kernel_options(GradeOptions(device="auto"), 0).device == "cpu"
    with pytest.raises(ConfigurationError, match="--device gpu, but no GPU was found here "
                       r"\(nvidia-smi is not on PATH\). Use --device auto"):
        devices.resolve_device("gpu")


def test_a_failing_nvidia_smi_means_no_gpu(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, monkeypatch, output="NVIDIA-SMI has failed\n", rc=9)
    assert discover_gpus() == ()


def test_kernels_get_gpus_round_robin_with_only_their_device_nodes(tmp_path):
    dev = _fake_dev(tmp_path)  # no nvidia-uvm-tools here: it is left out
    gpus = (Gpu(0, 81559, "GPU-aaaa-0000"), Gpu(1, 81559, "GPU-bbbb-1111"))
    base = GradeOptions(device="gpu", kernel_env=(("GRADER_SEED", "3"),))
    chosen = [kernel_options(base, slot, gpus, dev) for slot in range(3)]
    assert [o.device for o in chosen] == ["gpu:0", "gpu:1", "gpu:0"]  # the third shares GPU 0
    assert chosen[1].gpu_devices == (f"{dev}/nvidiactl", f"{dev}/nvidia-uvm", f"{dev}/nvidia1")
    assert dict(chosen[1].kernel_env) == {
        "GRADER_SEED": "3", "CUDA_VISIBLE_DEVICES": "GPU-bbbb-1111",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    assert kernel_options(chosen[1], 7, gpus, dev) is chosen[1]  # already pinned
    assert kernel_options(GradeOptions(device="cpu"), 0, gpus, dev).device == "cpu"
    without_uuid = kernel_options(base, 0, (Gpu(4),), dev)
    assert dict(without_uuid.kernel_env)["CUDA_VISIBLE_DEVICES"] == "4"
    assert without_uuid.gpu_devices == (f"{dev}/nvidiactl", f"{dev}/nvidia-uvm")
    assert device_nodes(0, tmp_path / "nowhere") == ()


def test_the_sandbox_passes_the_gpu_nodes_and_environment_through(tmp_path):
    dev = _fake_dev(tmp_path)
    options = kernel_options(GradeOptions(device="gpu"), 1, (Gpu(0), Gpu(1)), dev)
    spec = SandboxSpec(mode="bubblewrap", work_dir=tmp_path / "work", io_dir=tmp_path / "io",
                       gpu_devices=options.gpu_devices, extra_env=dict(options.kernel_env))
    argv = spec.wrap(["python"])
    binds = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--dev-bind"]
    assert binds == [f"{dev}/nvidiactl", f"{dev}/nvidia-uvm", f"{dev}/nvidia1"]
    for node in binds:  # bound at the same path inside
        assert argv[argv.index(node) + 1] == node
    assert f"{dev}/nvidia0" not in argv
    env = spec.environment()
    assert (env["CUDA_VISIBLE_DEVICES"], env["TF_FORCE_GPU_ALLOW_GROWTH"]) == ("1", "true")
    cpu = SandboxSpec(mode="bubblewrap", work_dir=tmp_path / "work", io_dir=tmp_path / "io")
    assert "--dev-bind" not in cpu.wrap(["python"])
    assert cpu.environment()["CUDA_VISIBLE_DEVICES"] == "-1"


def test_the_assigner_counts_across_threads_from_its_start(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, monkeypatch)
    next_options = assigner(GradeOptions(device="gpu"), start=1)
    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.append(next_options().device))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == ["gpu:0"] * 3 + ["gpu:1"] * 3
    assert assigner(GradeOptions(device="gpu"), start=1)().device == "gpu:1"
    cpu = GradeOptions(device="cpu")
    assert assigner(cpu)() is cpu


def test_cli_refuses_device_gpu_without_a_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi in /usr/bin")
    code = main(["--course", str(TOY_COURSE), "run", str(tmp_path), "-a", "toy",
                 "--device", "gpu", "--sandbox", "off", "--out", str(tmp_path / "out")])
    assert code == 4
    assert "ConfigurationError: --device gpu, but no GPU was found" in capsys.readouterr().err


def test_a_batch_on_fake_gpus_records_each_kernels_gpu(tmp_path, monkeypatch):
    """The kernels really start with the GPU environment; TensorFlow is not asked to use it."""
    _fake_nvidia_smi(tmp_path, monkeypatch)
    from grader.assignment import load_assignment

    subs = tmp_path / "subs"
    subs.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(TOY_COURSE / "reference" / "toy" / "toy.ipynb", subs / f"{name}.ipynb")
    toy = load_assignment("toy", TOY_COURSE)
    summary = run_batch(subs, toy, tmp_path / "out", GradeOptions(sandbox=sandbox_mode(),
                        device="gpu"), workers=2, use_cache=False, progress=False)
    assert {r.student_id: (r.device, r.status.value) for r in summary.results} == {
        "a": ("gpu:0", "ok"), "b": ("gpu:1", "ok"), "c": ("gpu:0", "ok")}


def test_default_workers_hold_one_kernel_per_gpu(monkeypatch):
    from grader import runner

    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert runner.default_workers(memory_mb=1) == 16  # cores bound it
    assert runner.default_workers(memory_mb=1, gpus=2) == 2
    assert runner.default_workers(memory_mb=10**9, gpus=2) == 1  # memory bounds it
