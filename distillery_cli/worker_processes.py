"""The worker processes of `distillery up`, restarted when one dies, until `up` stops them."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)


class Workers:
    """The worker processes of `up`, restarted when one dies (OOM killer, a stuck model's exit) until stop()."""

    def __init__(self, argvs: list[list[str]], names: list[str], logs: list[Path] | None = None):
        self.argvs, self.names, self.logs = argvs, names, logs
        self.procs = [self._start(i) for i in range(len(argvs))]
        self.started = [time.monotonic()] * len(argvs)
        self.delays = [1.0] * len(argvs)
        self.stopping = threading.Event()
        threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True).start()

    def _start(self, i: int) -> subprocess.Popen:
        """Start worker i, its output appended to its log file (if it has one)."""
        if self.logs is None:
            return subprocess.Popen(self.argvs[i])
        self.logs[i].parent.mkdir(parents=True, exist_ok=True)
        with open(self.logs[i], "ab") as log:  # the child keeps its own descriptor
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting worker {self.names[i]}\n".encode())
            log.flush()
            return subprocess.Popen(self.argvs[i], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _supervise(self) -> None:
        while not self.stopping.wait(1.0):
            for i, proc in enumerate(self.procs):
                code = proc.poll()
                if code is None or self.stopping.is_set():
                    continue
                # A worker that dies soon after starting waits longer each time (up to a minute): no busy loop.
                quick = time.monotonic() - self.started[i] < 30
                self.delays[i] = min(self.delays[i] * 2, 60.0) if quick else 1.0
                logger.warning(
                    "worker %s exited with code %s; restarting it in %.0f s%s",
                    self.names[i],
                    code,
                    self.delays[i],
                    f" (its log: {self.logs[i]})" if self.logs else "",
                )
                if self.stopping.wait(self.delays[i]):
                    return
                self.procs[i] = self._start(i)
                self.started[i] = time.monotonic()

    def stop(self) -> None:
        """SIGTERM every worker (a running job is handed back), then wait up to 30 s each."""
        self.stopping.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
