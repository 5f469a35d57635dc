"""HTTPS for Triton's HTTP endpoint, which 2.51 serves only in plain text.

With TLS the launcher runs Triton's HTTP endpoint on loopback and this terminator on the
public address: it completes the TLS handshake (asking for a client certificate signed by
the given CA for mutual TLS) and pipes the bytes to Triton unchanged. gRPC needs none of
this: Triton serves TLS on gRPC itself.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading

log = logging.getLogger("i2tt_server")


def server_context(tls) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert), str(tls.key))
    if tls.client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(tls.client_ca))
    return context


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except (ConnectionError, OSError, RuntimeError):
            pass


class TlsProxy:
    """TLS on ``host:port`` -> plain TCP to ``127.0.0.1:target_port``, in a daemon thread."""

    def __init__(self, host: str, port: int, target_port: int, tls):
        self.host, self.port, self.target_port = host, port, target_port
        self.context = server_context(tls)  # bad PEM files fail here, before serving
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="i2tt-https",
                                        daemon=True)

    async def _handle(self, client_reader, client_writer) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, writer), _pipe(reader, client_writer))

    def start(self) -> "TlsProxy":
        self._server = self._loop.run_until_complete(asyncio.start_server(
            self._handle, self.host, self.port, ssl=self.context, ssl_handshake_timeout=10))
        self._thread.start()
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def close():
            self._server.close()
            await self._server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        except Exception:  # noqa: BLE001 - stopping anyway
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
