"""A small client of Triton's HTTP API for what the launcher does itself: readiness,
statistics, and the repository API (index, load, unload), which the control secret opens."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from .serve_options import API_KEY_HEADER, CONTROL_HEADER


class TritonHttp:
    def __init__(self, url: str, control_secret: str, api_key: str | None = None):
        self.url = url
        self._control_secret = control_secret
        self.api_key = api_key

    def call(self, method: str, path: str, control: bool = False, timeout: float = 5,
             body: bytes | None = None):
        """The parsed JSON answer of one call (None for an empty 200); raises on errors."""
        headers = {CONTROL_HEADER: self._control_secret} if control else {}
        if self.api_key:
            headers[API_KEY_HEADER] = self.api_key
        request = urllib.request.Request(self.url + path, data=body, headers=headers,
                                         method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read()
        return json.loads(data) if data else None

    def ready(self, model: str | None = None) -> bool:
        """The server's readiness (every model ready), or one model's."""
        try:
            self.call("GET", f"/v2/models/{model}/ready" if model else "/v2/health/ready",
                      timeout=2)
            return True
        except (urllib.error.URLError, OSError):
            return False

    def statistics(self, model: str) -> dict:
        return self.call("GET", f"/v2/models/{model}/stats")["model_stats"][0]

    def model_states(self) -> dict[str, str]:
        """Each model's state in the repository index (READY, UNLOADING, UNAVAILABLE ...)."""
        index = self.call("POST", "/v2/repository/index", control=True, body=b"{}")
        return {entry["name"]: entry.get("state", "") for entry in index}

    def load(self, model: str, timeout: float) -> None:
        self.call("POST", f"/v2/repository/models/{model}/load", control=True, body=b"{}",
                  timeout=timeout)

    def unload(self, model: str) -> None:
        self.call("POST", f"/v2/repository/models/{model}/unload", control=True, body=b"{}")

    def wait_unloaded(self, models: list[str], deadline: float) -> list[str]:
        """Wait until none of ``models`` is still serving or unloading; the ones still busy
        at the deadline. An unload finishes when the model's requests in flight are done."""
        busy = list(models)
        while busy:
            states = self.model_states()
            busy = [m for m in busy if states.get(m) in ("READY", "UNLOADING", "LOADING")]
            if not busy or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return busy
