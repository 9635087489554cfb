"""Child-process hygiene shared by everything that starts processes."""
from __future__ import annotations

import ctypes
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

_PR_SET_PDEATHSIG = 1
# The kernel's parent-death signal follows the thread that started a child, not its process: a child started from a
# thread that then ends (a worker's) is signalled then, however long the process lives on. start_child starts them all
# from this one thread, which ends only with the process (at its exit, or with it when it is killed).
_STARTER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="child-starter")


def child_preexec() -> None:
    """Runs in a child before exec: the kernel sends it SIGTERM when its parent dies, so nothing is orphaned."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: cleanup then relies on the parent's own shutdown path


def start_child(command: list[str], **popen_kwargs) -> subprocess.Popen:
    """subprocess.Popen(command, **popen_kwargs), whichever thread asks, the child sent SIGTERM when this process
    ends (child_preexec)."""
    return _STARTER.submit(subprocess.Popen, command, preexec_fn=child_preexec, **popen_kwargs).result()


def exit_description(returncode: int) -> str:
    """How a child process ended, as a message about it says it: "exited with code 1"; "killed by SIGKILL" for a
    negative returncode; "stopped by SIGTERM (exit code 143)" for 128 plus a signal's number, the status a stage
    stopped by that signal exits with (as a shell reports a process the signal killed)."""
    if returncode < 0:
        return f"killed by {signal_name(-returncode)}"
    if 128 < returncode < 128 + signal.NSIG:
        return f"stopped by {signal_name(returncode - 128)} (exit code {returncode})"
    return f"exited with code {returncode}"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal, which has no name of its own
        return f"signal {number}"


def terminate(process: subprocess.Popen | None, timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within timeout_s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
