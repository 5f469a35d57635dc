"""Supervising the real tritonserver: ``TritonServer`` starts it from ``ServeOptions`` with
the TLS terminator beside it, waits until every model is ready, heals a model whose process
died (the watchdog reports it), drains and stops it."""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.error

from . import shm
from .model_processes import retire
from .serve_options import ServeOptions
from .tls_proxy import TlsProxy
from .triton_binary import find_tritonserver
from .triton_process import TritonProcess, free_port  # noqa: F401 - callers import it here
from .watchdog import Watchdog

log = logging.getLogger("i2tt_server")


class TritonServer(TritonProcess):
    """One tritonserver process: start, wait until every model is ready, heal a model whose
    process died (``watch``), drain and stop.

    The server always runs in explicit model-control mode with every served model loaded
    at start, so the launcher can unload and reload one model.
    """

    def __init__(self, options: ServeOptions, watch: bool = True):
        super().__init__(options)
        self.watch = watch
        self.failure: str | None = None  # why the launcher gave up on the server
        self._control = threading.Lock()  # one of heal / drain at a time
        self._stopping = threading.Event()
        self._watchdog: Watchdog | None = None
        self._tls_proxy: TlsProxy | None = None

    def start(self, timeout: float = 300.0) -> "TritonServer":
        self.launch(find_tritonserver())
        try:
            if self.options.tls:
                self._tls_proxy = TlsProxy(self.options.host, self.options.http_port,
                                           self._triton_http_port, self.options.tls).start()
            self.wait_ready(timeout)
            if self.watch:
                self._watchdog = Watchdog(self.process.pid, self.heal, self._watching).start()
        except BaseException:
            self.stop(drain=False)
            raise
        return self

    def _watching(self) -> bool:
        return self.process.poll() is None and not self.stopping

    def heal(self, model: str, reason: str, load_timeout: float = 600.0,
             others_alive: bool = False) -> bool:
        """Reload ``model``, a process of which died. While ``others_alive`` (another of its
        processes still runs), it is reloaded in place: Triton keeps the loaded model
        serving until the new one is ready, so the living processes go on answering (and
        the dead one fails the requests it is handed, which the i2tt client retries). With
        none alive it is unloaded first, which takes it, and with strict readiness the
        server, out of readiness until it is back. False (and the server stopped) if it does
        not come back."""
        with self._control:
            if self._stopping.is_set():
                return True
            if others_alive:
                log.error("i2tt: %s; reloading %s while its other processes serve", reason, model)
            else:
                log.error("i2tt: %s; %s is not ready while it reloads", reason, model)
            started = time.monotonic()
            try:
                self._reload(model, load_timeout, others_alive)
            except Exception as exc:  # noqa: BLE001 - any failure means: give up the server
                if self.stop_requested.is_set():
                    return True  # a stop came meanwhile: that is no failure
                self.failure = f"{model} did not come back after its process died: {exc}"
                log.error("i2tt: %s; stopping the server", self.failure)
                self._stop_now()
                return False
            log.error("i2tt: %s is ready again after %.1fs", model, time.monotonic() - started)
            return True

    def _reload(self, model: str, load_timeout: float, others_alive: bool) -> None:
        in_place = others_alive and self.mark_changed(model)
        survivors = self.model_processes(model) if in_place else []
        if not in_place:
            self.api.unload(model)
        # Loading right away (Triton runs it after the unload) leaves no moment in which
        # the server looks ready without the model.
        self.api.load(model, load_timeout)
        # Ensembles unloaded with the model come back with it; load any that did not.
        for other in self.expected_models():
            if not self.ready(other):
                self.api.load(other, load_timeout)
        self.wait_ready(60)
        retire(survivors, self.options.exit_timeout)

    def mark_changed(self, model: str) -> bool:
        """Make Triton's next load of ``model`` a reload: Triton 2.51 reloads a loaded model
        only when its files changed (checked: a plain load with one process dead is a
        no-op, and after touching the model's files it loads new processes while the
        living ones serve). False where the repository is read-only."""
        folder = self.model_repository / model
        try:
            for path in [folder, *folder.rglob("*")]:
                os.utime(path)
        except OSError as exc:
            log.warning("i2tt: cannot mark %s changed (%s); unloading it to reload", model, exc)
            return False
        return True

    def drain(self, timeout: float | None = None) -> list[str]:
        """Stop taking requests and let the accepted ones finish: unload the callers first
        (ensembles, and models that call others, like ocr_page: their requests in flight
        still reach the models they call, which stay loaded), then the models they call,
        each unload finishing when its requests are done. Returns the models still busy
        when ``timeout`` (default: the exit timeout) ran out."""
        deadline = time.monotonic() + (self.options.exit_timeout if timeout is None else timeout)
        self._stopping.set()
        # a model being healed holds the lock while it loads: wait for it only so long
        if not self._control.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return ["(a model still reloading)"]
        try:
            if not self.process or self.process.poll() is not None:
                return []
            busy = []
            try:
                for group in self.options.model_repository.callers_first():
                    loaded = [m for m, state in self.api.model_states().items()
                              if m in group and state == "READY"]
                    for model in loaded:
                        self.api.unload(model)
                    busy += self.api.wait_unloaded(loaded, deadline)
            except (urllib.error.URLError, OSError) as exc:
                log.error("i2tt: draining failed: %s", exc)
            return busy
        finally:
            self._control.release()

    def stop(self, timeout: float | None = None, drain: bool = True) -> int | None:
        """Drain, then stop the process; its exit code. The whole stop takes at most
        ``timeout`` (default: the exit timeout) plus STOP_MARGIN seconds."""
        timeout = self.options.exit_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        try:
            if drain and self.process and self.process.poll() is None:
                busy = self.drain(timeout)
                if busy:
                    log.error("i2tt: requests still in flight on %s after %ss", busy, timeout)
            return self._stop_now(max(0.0, deadline - time.monotonic()))
        finally:
            self._stop_companions()

    def _stop_now(self, timeout: float | None = None) -> int | None:
        self._stopping.set()
        return self.end(timeout)

    def _stop_companions(self) -> None:
        """What the launcher runs beside the server: the watchdog, the TLS terminator and
        the derived repository (once the server has stopped or exited)."""
        if self._watchdog:
            self._watchdog.stop()
        if self._tls_proxy:
            self._tls_proxy.stop()
        self.remove_derived()
        if self.process and self.process.poll() is not None:
            # a server that had to be killed leaves its model processes' shared memory
            shm.remove_stale_regions()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wait(self) -> int:
        """Run until the server exits, or until ``stop_requested`` is set: then drain and
        stop. The exit code: 0 after a requested stop, non-zero if the server failed."""
        assert self.process is not None
        try:
            while self.process.poll() is None:
                if self.stop_requested.wait(0.2):
                    self.stop()
                    break
            if self.failure:
                return 1
            return 0 if self.stop_requested.is_set() else self.process.returncode
        finally:
            self._stop_companions()

    def __enter__(self):
        return self.start() if self.process is None else self

    def __exit__(self, *exc):
        self.stop()
