"""A second sandboxed kernel per submission, in which no student code ran before the check.

The student's own kernel ran the whole notebook: anything in it (``keras.Model.compile``,
the base class's ``train_step``, the probe's helpers) may have been replaced. A check
that must see what one student definition does *by itself* asks for a clean kernel
(``expected.context.clean_kernel()``): a new kernel from the same sandbox, limits and
kernel provider as the submission's (the same zygote, with the prepared provider),
started on demand, at most once per submission, and shut down with the submission.
The check decides what runs in it (:meth:`CleanKernel.run`, e.g. the grader's own
prelude, then the student's class definition alone, see :mod:`grader.definitions`) and
reads results through the ordinary probe API (:attr:`CleanKernel.student`), as data.

It is the executor's kernel machinery (:class:`grader.kernels.Kernel`, the watchdog, the
shutdown) reused: nothing here is a second sandbox.
"""

from __future__ import annotations

import asyncio
import threading

from .kernels import Kernel
from .probe import (KernelTransport, Student, await_shell_reply, drain_iopub,
                    install_responder_in)
from .sandbox import Watchdog, kill_tree

START_TIMEOUT_S = 120.0


class CleanKernel:
    """One clean kernel. Made by :class:`CleanKernels`; used from a check's thread."""

    def __init__(self, kernel, loop: asyncio.AbstractEventLoop, watchdog: Watchdog, kc,
                 probe_token: tuple[str | None, str]):
        self._kernel, self._loop, self._watchdog, self._kc = kernel, loop, watchdog, kc
        transport = KernelTransport(kc, self._interrupt, *probe_token)
        self.student = Student(transport, kernel.io_dir)

    def _interrupt(self) -> None:
        asyncio.run_coroutine_threadsafe(self._kernel.km.interrupt_kernel(),
                                         self._loop).result(timeout=10)

    def run(self, code: str, *, timeout: float = 60.0) -> dict[str, str] | None:
        """Execute ``code`` (trusted or student source) in the kernel; ``None`` when it ran,
        else ``{"ename": ..., "evalue": ...}``. Whatever it prints is dropped."""
        msg_id = self._kc.execute(code, silent=False, store_history=False, allow_stdin=False)
        reply = await_shell_reply(self._kc, msg_id, timeout, self._interrupt,
                                  dead=lambda: bool(self._watchdog.usage.killed_for))
        drain_iopub(self._kc)
        content = reply.get("content", {})
        if content.get("status") == "ok":
            return None
        return {"ename": str(content.get("ename", "Error"))[:100],
                "evalue": str(content.get("evalue", ""))[:300]}

    async def _close(self) -> None:
        kernel = self._kernel
        process = kernel.process
        self.student.close()
        try:
            self._kc.stop_channels()
            if kernel.km.has_kernel:
                await asyncio.wait_for(kernel.km.shutdown_kernel(now=True), timeout=10)
        except Exception:  # noqa: BLE001 - the tree is killed below either way
            pass
        if process is not None:
            kill_tree(process.pid)
        try:
            await kernel.km._async_cleanup_resources()
        except Exception:  # noqa: BLE001
            pass
        self._watchdog.stop()
        kernel.remove()


class CleanKernels:
    """The clean kernel of one submission: started by the first check that asks (from the
    checks' thread, on the executor's event loop), reused by later checks, closed by the
    executor after the last check (:meth:`close`, on the loop)."""

    def __init__(self, setup, loop: asyncio.AbstractEventLoop, memory_mb: int,
                 max_processes: int):
        self._setup, self._loop = setup, loop
        self._limits = (memory_mb, max_processes)
        self._lock = threading.Lock()
        self._kernel: CleanKernel | None = None
        self._failed: BaseException | None = None

    def __call__(self) -> CleanKernel:
        with self._lock:
            # A kernel that does not start is the grader's fault, not the student's: a plain
            # error, which run_checks reports as "Grader error in this check".
            if self._failed is not None:
                raise RuntimeError(f"the clean kernel did not start: {self._failed}")
            if self._kernel is None:
                future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
                try:
                    self._kernel = future.result(timeout=START_TIMEOUT_S + 30)
                except BaseException as error:  # noqa: BLE001 - reported by the check
                    self._failed = error
                    raise RuntimeError(f"the clean kernel did not start: {error}") from None
            return self._kernel

    async def _start(self) -> CleanKernel:
        from jupyter_client.blocking import BlockingKernelClient

        kernel = Kernel(self._setup)
        watchdog = None
        try:
            await kernel.launch()
            watchdog = Watchdog(kernel.process.pid, *self._limits)
            watchdog.start()
            # The probe's responder goes in first, before any student definition runs here.
            probe_token = await install_responder_in(kernel.km, timeout=START_TIMEOUT_S)
            kc = BlockingKernelClient()
            kc.load_connection_info(kernel.km.get_connection_info())
            kc.start_channels()
            await asyncio.to_thread(kc.wait_for_ready, timeout=START_TIMEOUT_S)
            return CleanKernel(kernel, self._loop, watchdog, kc, probe_token)
        except BaseException:
            if watchdog is not None:
                watchdog.stop()
            kernel.discard()
            raise

    async def close(self) -> None:
        with self._lock:
            kernel, self._kernel = self._kernel, None
        if kernel is not None:
            await kernel._close()


