"""What a client is made with and keeps for every call: the server, headers, deadline and
retry defaults, URL limits, and the gRPC channel's options."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

from .deadlines import Deadline
from .inputs import FetchLimits

API_KEY_HEADER = "i2tt-api-key"
# Triton's gRPC frontend checks a restricted protocol's header (`--grpc-restricted-protocol
# =...:i2tt-api-key=KEY`) under this prefixed name; the plain name is what its HTTP
# frontend and proxies in front of the server read.
TRITON_GRPC_HEADER_PREFIX = "triton-grpc-protocol-"


def default_channel_options() -> dict:
    """tritonclient's own channel options. It drops all of them (the message size limits
    included) when given any, so they are restated under the caller's."""
    keepalive = KeepAliveOptions()
    return {"grpc.max_send_message_length": MAX_GRPC_MESSAGE_SIZE,
            "grpc.max_receive_message_length": MAX_GRPC_MESSAGE_SIZE,
            "grpc.keepalive_time_ms": keepalive.keepalive_time_ms,
            "grpc.keepalive_timeout_ms": keepalive.keepalive_timeout_ms,
            "grpc.keepalive_permit_without_calls": keepalive.keepalive_permit_without_calls,
            "grpc.http2.max_pings_without_data": keepalive.http2_max_pings_without_data}


def channel_options(channel_args: list | None, load_balancing: str | None) -> list | None:
    """gRPC channel options: tritonclient's defaults, then ``load_balancing`` (a policy name
    such as ``round_robin``), then the caller's ``channel_args`` (they win)."""
    if channel_args is None and load_balancing is None:
        return None  # tritonclient applies its defaults itself
    options = default_channel_options()
    if load_balancing:
        options["grpc.lb_policy_name"] = load_balancing
    options.update(dict(channel_args or ()))
    return list(options.items())


def call_headers(headers: dict[str, str] | None, api_key: str | None) -> dict[str, str] | None:
    """The gRPC metadata of every call: the caller's ``headers`` (keys in lower case, as
    gRPC wants them) and the API key under both of its names."""
    headers = {key.lower(): value for key, value in (headers or {}).items()}
    if api_key is not None:
        if not api_key or api_key != api_key.strip() or "\n" in api_key:
            raise ValueError("api_key must be a non-empty string without surrounding "
                             "whitespace or line breaks")
        headers[API_KEY_HEADER] = api_key
        headers[TRITON_GRPC_HEADER_PREFIX + API_KEY_HEADER] = api_key
    return headers or None


@dataclass(frozen=True)
class ClientSettings:
    """The client-wide defaults and limits that every call of one client reads."""

    server: str
    headers: dict[str, str] | None = None
    timeout: float | None = None
    max_in_flight: int = 16
    retries: int = 0
    retry_backoff: float = 0.5
    retry_max_delay: float = 10.0
    limits: FetchLimits = FetchLimits()
    # model -> its config (JSON form), fetched once by generic calls to read output shapes
    configs: dict = field(default_factory=dict, compare=False, hash=False)
    # model -> the optional outputs its server turned out not to have (an older server)
    absent_outputs: dict = field(default_factory=dict, compare=False, hash=False)

    def retry_delay(self, attempt: int) -> float:
        """Exponential backoff with jitter, so clients retrying together do not stampede."""
        delay = min(self.retry_max_delay, self.retry_backoff * 2 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)

    def deadline(self, timeout: float | None) -> Deadline:
        """A call's deadline: its own ``timeout``, else the client's (0: none)."""
        seconds = timeout if timeout is not None else self.timeout
        return Deadline.after(seconds or None)
