"""HTTP and websocket access to a ComfyUI server that never waits past a deadline (standard library only).

A deadline covers a whole run: every socket read is bounded by the time left, so a server that sends one byte every
few seconds cannot reset the clock, and a silent one is given up on when the time is spent. Every failure is a
WorkflowError with one readable line.
"""

import base64
import http.client
import json
import os
import socket
import ssl
import time
import urllib.parse

MAX_ANSWER_BYTES = 1 << 30  # an answer larger than this is not ComfyUI's
MAX_FRAME_BYTES = 64 << 20  # a websocket frame larger than this is not ComfyUI's (previews are small JPEGs)
SHOWN_BYTES = 160  # how much of an unexpected answer an error line quotes


class WorkflowError(Exception):
    """A failure reported by (or about) the server; ``lines`` holds one readable line per problem."""

    def __init__(self, lines: list[str]):
        lines = [" ".join(str(line).split()) for line in lines]  # server text may hold newlines
        super().__init__("\n".join(lines))
        self.lines = lines


class WorkflowTimeout(WorkflowError):
    """The time ran out (the prompt may still be running on the server)."""


class Deadline:
    """When a run must end; ``what`` names the limit in the error (e.g. "--timeout 10")."""

    def __init__(self, seconds: float, what: str | None = None):
        self.end = time.monotonic() + seconds
        self.what = what or f"{seconds:g} s"

    def left(self) -> float:
        return self.end - time.monotonic()

    def sooner(self, seconds: float) -> "Deadline":
        """This deadline, or one ``seconds`` from now if that comes first."""
        if self.left() <= seconds:
            return self
        return Deadline(seconds)


class _DeadlineReads:
    """Each read waits at most until ``end``: a drip of bytes cannot outlast the deadline."""
    end: float | None = None

    def recv_into(self, *args, **kwargs):
        if self.end is not None:
            left = self.end - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline reached")
            self.settimeout(left)
        return super().recv_into(*args, **kwargs)


class _PlainSocket(_DeadlineReads, socket.socket):
    pass


class _TLSSocket(_DeadlineReads, ssl.SSLSocket):
    pass


def _open_socket(host: str, port: int, deadline: Deadline) -> _PlainSocket:
    """socket.create_connection, with reads bounded by ``deadline``."""
    error = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = _PlainSocket(family, kind, proto)
        try:
            sock.settimeout(max(deadline.left(), 0.001))
            sock.connect(address)
            sock.end = deadline.end
            return sock
        except OSError as failure:
            error = failure
            sock.close()
    raise error or OSError(f"cannot resolve {host}")


def _connection(server: str, deadline: Deadline) -> tuple[http.client.HTTPConnection, str]:
    """A connected HTTP(S) connection to ``server`` and the path prefix the server URL has."""
    url = urllib.parse.urlsplit(server)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise WorkflowError([f"--server {server!r} is not an http:// or https:// address"])
    timeout = max(deadline.left(), 0.001)
    if url.scheme == "https":
        context = ssl.create_default_context()
        context.sslsocket_class = _TLSSocket
        connection = http.client.HTTPSConnection(url.hostname, url.port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    connection._create_connection = lambda address, *_: _open_socket(*address, deadline)
    connection.connect()
    connection.sock.end = deadline.end  # the TLS socket is a new object
    return connection, url.path.rstrip("/")


def request(server: str, path: str, body=None, timeout: float = 30.0, headers=None,
            deadline: Deadline | None = None) -> tuple[int, bytes]:
    """(status, bytes) of one request, finished within ``timeout`` s and before ``deadline``; JSON ``body`` makes
    it a POST. HTTP errors are returned, not raised; a connection that fails or runs out of time raises
    WorkflowError (WorkflowTimeout)."""
    limit = Deadline(timeout) if deadline is None else deadline.sooner(timeout)
    method = "GET" if body is None else "POST"
    if body is not None and not isinstance(body, bytes):
        body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
    what = f"{method} {path.split('?')[0]}"
    connection = None
    try:
        if limit.left() <= 0:
            raise TimeoutError("deadline reached")
        connection, prefix = _connection(server.rstrip("/"), limit)
        connection.request(method, prefix + path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read(MAX_ANSWER_BYTES + 1)
        if len(data) > MAX_ANSWER_BYTES:
            raise WorkflowError([f"ComfyUI at {server} answered {what} with more than {MAX_ANSWER_BYTES >> 20} MiB"])
        return response.status, data
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise _failure(server, what, error, limit) from error
    finally:
        if connection is not None:
            connection.close()


def _failure(server: str, what: str, error: Exception, limit: Deadline) -> WorkflowError:
    if isinstance(error, TimeoutError) or limit.left() <= 0:
        return WorkflowTimeout([f"ComfyUI at {server} did not answer {what} within {limit.what}"])
    if isinstance(error, ConnectionRefusedError):
        return WorkflowError([f"cannot reach ComfyUI at {server}: connection refused (is it running? --server)"])
    if isinstance(error, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
        return WorkflowError([f"ComfyUI at {server} closed the connection during {what}"])
    if isinstance(error, (http.client.HTTPException, ValueError)):
        return WorkflowError([f"ComfyUI at {server} sent a broken HTTP answer to {what}: "
                              f"{type(error).__name__} {str(error)[:SHOWN_BYTES]}"])
    return WorkflowError([f"cannot reach ComfyUI at {server}: {getattr(error, 'strerror', None) or error}"])


def shown(data: bytes) -> str:
    """The start of an answer, on one line, for an error message."""
    text = " ".join(data[:SHOWN_BYTES].decode(errors="replace").split())
    return text + ("…" if len(data) > SHOWN_BYTES else "") if text else "an empty body"


def decode_json(data: bytes, what: str, expect: type = dict, status: int = 200):
    """The JSON value of an answer, of type ``expect``; WorkflowError when it is not JSON or not that shape."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise WorkflowError([f"{what}: ComfyUI answered HTTP {status} with something that is not JSON: "
                             f"{shown(data)}"]) from None
    if not isinstance(value, expect):
        kind = {dict: "an object", list: "a list"}.get(expect, expect.__name__)
        raise WorkflowError([f"{what}: ComfyUI answered with JSON that is not {kind}: {shown(data)}"])
    return value


def get_json(server: str, path: str, timeout: float = 30.0, deadline: Deadline | None = None, expect=dict):
    status, data = request(server, path, timeout=timeout, deadline=deadline)
    if status != 200:
        raise WorkflowError([f"GET {path} failed with HTTP {status}: {shown(data)}"])
    return decode_json(data, f"GET {path.split('?')[0]}", expect)


def _receive(sock) -> bytes:
    """What one read brings, through recv_into (the method that keeps to the socket's deadline)."""
    buffer = bytearray(1 << 16)
    return bytes(buffer[:sock.recv_into(buffer)])


# --- the websocket, for progress ---------------------------------------------------------------------------------

class ProgressSocket:
    """ComfyUI's /ws for one client id (RFC 6455, client side): its JSON messages, read without ever blocking
    past the wait asked for. Only for progress: ``open`` returns None where the socket cannot be had."""

    def __init__(self, sock):
        self.sock, self.buffer, self.closed = sock, bytearray(), False

    @classmethod
    def open(cls, server: str, client_id: str, deadline: Deadline):
        limit, sock = deadline.sooner(5.0), None  # progress is a nicety: a slow upgrade costs the run little time
        try:
            connection, prefix = _connection(server.rstrip("/"), limit)
            sock, connection.sock = connection.sock, None  # the socket outlives the HTTP connection object
            key = base64.b64encode(os.urandom(16)).decode()
            host = urllib.parse.urlsplit(server).netloc
            sock.sendall((f"GET {prefix}/ws?clientId={client_id} HTTP/1.1\r\nHost: {host}\r\n"
                          f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                          f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
            head = bytearray()
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = _receive(sock)
                if not chunk:
                    raise ConnectionError("closed during the upgrade")
                head += chunk
            status_line = bytes(head).split(b"\r\n", 1)[0]
            if b" 101 " not in status_line + b" ":
                raise ConnectionError(f"no upgrade: {status_line[:80]!r}")
        except (OSError, WorkflowError, http.client.HTTPException, ValueError):
            if sock is not None:
                sock.close()
            return None
        socket_ = cls(sock)
        socket_.buffer += head[head.index(b"\r\n\r\n") + 4:]
        return socket_

    def messages(self, wait: float) -> list[dict]:
        """The JSON messages that arrive within ``wait`` seconds (or are already buffered)."""
        if not self.closed and not self._frames_ready():
            try:
                self.sock.end = time.monotonic() + max(wait, 0.001)
                chunk = _receive(self.sock)
                if not chunk:
                    self.close()
                self.buffer += chunk
            except (TimeoutError, socket.timeout):
                pass
            except OSError:
                self.close()
        found = []
        while (frame := self._next_frame()) is not None:
            opcode, payload = frame
            if opcode == 1:
                try:
                    message = json.loads(payload)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    found.append(message)
            elif opcode == 9:
                self._send(0xA, payload)  # pong
            elif opcode == 8:
                self.close()
        return found

    def _frames_ready(self) -> bool:
        header = self._header()
        return header is not None and len(self.buffer) >= sum(header)

    def _header(self) -> tuple[int, int] | None:
        """(header length with the mask, payload length) of the first buffered frame, once its header is in."""
        buffer = self.buffer
        if len(buffer) < 2:
            return None
        length, start = buffer[1] & 0x7F, 2
        if length >= 126:
            size = 2 if length == 126 else 8
            if len(buffer) < 2 + size:
                return None
            length, start = int.from_bytes(buffer[2:2 + size], "big"), 2 + size
        if length > MAX_FRAME_BYTES:  # not ComfyUI: stop reading rather than buffer it
            self.close()
            self.buffer.clear()
            return None
        return start + (4 if buffer[1] & 0x80 else 0), length

    def _next_frame(self) -> tuple[int, bytes] | None:
        """(opcode, payload) of the first buffered frame, taken out of the buffer, once it is whole."""
        header = self._header()
        if header is None or len(self.buffer) < sum(header):
            return None
        start, length = header
        opcode, payload = self.buffer[0] & 0x0F, bytes(self.buffer[start:start + length])
        if self.buffer[1] & 0x80:  # servers do not mask, but a masked frame is still readable
            mask = self.buffer[start - 4:start]
            payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        del self.buffer[:start + length]
        return opcode, payload

    def _send(self, opcode: int, payload: bytes) -> None:
        """A client frame (masked, as RFC 6455 requires of clients)."""
        mask = os.urandom(4)
        data = bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in
                                                                          enumerate(payload[:125]))
        try:
            self.sock.sendall(data)
        except OSError:
            self.close()

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass
