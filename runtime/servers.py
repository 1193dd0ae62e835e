"""Running ASGI apps (gateway, sandbox) inside an asyncio program."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now (for servers started by tests and benchmarks)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front: a busy port is a clear OSError, and port 0 picks a free one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


async def serve(app: FastAPI, host: str, port: int) -> None:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM). `log_config=None` here and below: uvicorn's
    loggers propagate to the root's handlers, where runtime.logs masks phone numbers, instead of its own."""
    sock = bind(host, port)
    with sock:
        await uvicorn.Server(uvicorn.Config(app, log_level="warning", log_config=None)).serve(sockets=[sock])


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the program it is embedded in (the dev stack, tests)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def running(app: FastAPI, host: str, port: int) -> AsyncIterator[uvicorn.Server]:
    """Serve in the background for the duration of the block."""
    sock = bind(host, port)
    server = _EmbeddedServer(uvicorn.Config(app, log_level="warning", log_config=None, lifespan="on"))
    server.config.host, server.config.port = sock.getsockname()[:2]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn exposes only a flag
        await asyncio.sleep(0.02)
    if task.done():
        task.result()
    try:
        yield server
    finally:
        server.should_exit = True
        await task
        sock.close()


def base_url(server: uvicorn.Server) -> str:
    return f"http://{server.config.host}:{server.config.port}"
