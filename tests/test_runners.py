"""The runners' shared machinery (``sp_dynamics.runners.common``)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

WORKER_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path

    from sp_dynamics.runners.common import run_jobs


    def job(folder, k, threads=1):
        Path(folder, f"{os.getpid()}.pid").write_text(str(k))
        time.sleep(300)


    if __name__ == "__main__":
        run_jobs(job, {k: (sys.argv[1], k) for k in range(2)}, jobs=2)
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has finished; only its exit status waits to be collected


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see the workers")
def test_parallel_workers_exit_when_their_runner_is_killed(tmp_path):
    # Catches: run_jobs' spawned --jobs workers outliving a runner killed by a signal it cannot
    # handle (kill -9, pkill), fitting on, unseen, on the cores the next run needs.
    script = tmp_path / "runner.py"
    script.write_text(WORKER_SCRIPT)
    runner = subprocess.Popen([sys.executable, str(script), str(tmp_path)])
    workers = []
    try:
        deadline = time.time() + 120
        while len(workers) < 2 and time.time() < deadline:
            time.sleep(0.2)
            workers = [int(p.stem) for p in tmp_path.glob("*.pid")]
        assert len(workers) == 2, "the two workers never started"
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        deadline = time.time() + 30
        while any(map(_alive, workers)) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(map(_alive, workers)), "a worker outlived its killed runner"
    finally:
        runner.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
