"""Serving the explorer's app with uvicorn: on a socket bound here (so that a port in use is one clear
line, and port=0 takes any free one), in the foreground (the command) or in a thread (tests, the benchmark)."""

import socket
import threading
import time
from contextlib import contextmanager

import uvicorn


def bound(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (IPv6 where the host is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)  # from here on a browser's connection waits for the server instead of being refused
    sock.set_inheritable(True)
    return sock


def address(sock: socket.socket) -> str:
    """http://HOST:PORT/ of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def server(app) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning"))


@contextmanager
def background(app, host: str = "127.0.0.1", port: int = 0):
    """`app` served in a thread on host:port until the block ends; yields its address (no trailing /)."""
    sock = bound(host, port)
    running = server(app)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the explorer's server did not start")
        time.sleep(0.02)
    try:
        yield address(sock).rstrip("/")
    finally:
        running.should_exit = True
        thread.join(timeout=10)
        sock.close()
