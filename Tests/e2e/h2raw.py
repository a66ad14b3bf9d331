"""Hand-built HTTP/2 frames for abuse tests (test_abuse.py).

Frames are built byte by byte so that a test can send what no well-behaved library would:
floods, resets without END_STREAM, CONTINUATION chains without END_HEADERS, HPACK blocks
that reference one dynamic-table entry thousands of times. ``RawConn`` is a blocking socket
with a frame reader whose every wait is bounded.
"""

import socket
import struct
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FRAME_NAMES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS", 5: "PUSH_PROMISE",
               6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE", 9: "CONTINUATION"}

END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

# Error codes (RFC 9113 §7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM, \
    INADEQUATE_SECURITY, HTTP_1_1_REQUIRED = range(14)
ERROR_NAMES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
               4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
               8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
               12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}

# SETTINGS identifiers
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, \
    S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = range(1, 7)


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, ftype, flags, stream & 0x7FFFFFFF) + payload


def settings(pairs=(), ack: bool = False) -> bytes:
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def ping(data: bytes = b"\0" * 8, ack: bool = False) -> bytes:
    return frame(PING, ACK if ack else 0, 0, data)


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment & 0x7FFFFFFF))


def rst_stream(stream: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream, struct.pack(">I", code))


def priority(stream: int, depends_on: int = 0, weight: int = 15, exclusive: bool = False) -> bytes:
    dep = (depends_on & 0x7FFFFFFF) | (0x80000000 if exclusive else 0)
    return frame(PRIORITY, 0, stream, struct.pack(">IB", dep, weight))


def goaway(last_stream: int, code: int = NO_ERROR, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_stream & 0x7FFFFFFF, code) + debug)


def data(stream: int, payload: bytes = b"", end_stream: bool = False) -> bytes:
    return frame(DATA, END_STREAM if end_stream else 0, stream, payload)


# ---- HPACK (just enough to build hostile blocks) ---------------------------

def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(s: bytes) -> bytes:
    return hpack_int(len(s), 7) + s


def lit(name: bytes, value: bytes, index: bool = False) -> bytes:
    """Literal header field with a new name, with or without incremental indexing."""
    return bytes([0x40 if index else 0x00]) + hpack_str(name) + hpack_str(value)


def indexed(i: int) -> bytes:
    return hpack_int(i, 7, 0x80)


def request_block(path: str = "/insight.test.v1.Test/Unary", authority: str = "abuse",
                  extra: List[Tuple[bytes, bytes]] = (), grpc: bool = True) -> bytes:
    """A request header block: :method POST (static 3), :scheme http (6), :path, :authority."""
    b = indexed(3) + indexed(6) + lit(b":path", path.encode()) + lit(b":authority", authority.encode())
    if grpc:
        b += lit(b"content-type", b"application/grpc") + lit(b"te", b"trailers")
    for n, v in extra:
        b += lit(n, v)
    return b


def headers(stream: int, block: bytes, end_stream: bool = False, end_headers: bool = True) -> bytes:
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    return frame(HEADERS, flags, stream, block)


def continuation(stream: int, block: bytes, end_headers: bool = False) -> bytes:
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, stream, block)


def grpc_message(payload: bytes) -> bytes:
    return b"\0" + struct.pack(">I", len(payload)) + payload


# ---- a connection -----------------------------------------------------------

@dataclass
class Frame:
    type: int
    flags: int
    stream: int
    payload: bytes

    @property
    def error_code(self) -> Optional[int]:
        if self.type == GOAWAY and len(self.payload) >= 8:
            return struct.unpack(">I", self.payload[4:8])[0]
        if self.type == RST_STREAM and len(self.payload) >= 4:
            return struct.unpack(">I", self.payload[:4])[0]
        return None

    @property
    def last_stream(self) -> Optional[int]:
        if self.type == GOAWAY and len(self.payload) >= 4:
            return struct.unpack(">I", self.payload[:4])[0] & 0x7FFFFFFF
        return None

    def __repr__(self):
        code = self.error_code
        extra = f" code={ERROR_NAMES.get(code, code)}" if code is not None else ""
        return f"<{FRAME_NAMES.get(self.type, self.type)} flags={self.flags:#x} stream={self.stream} len={len(self.payload)}{extra}>"


class RawConn:
    """A blocking TCP connection with a bounded frame reader."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 3.0, preface: bool = True,
                 client_settings=()):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closed = False
        self.frames: List[Frame] = []
        if preface:
            self.send(PREFACE + settings(client_settings))

    def send(self, data: bytes) -> bool:
        """False once the peer has closed or reset the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            self.closed = True
            return False

    def _fill(self, timeout: float) -> bool:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            return False
        except (ConnectionResetError, OSError):
            self.closed = True
            return False
        if not chunk:
            self.closed = True
            return False
        self.buf += chunk
        return True

    def _parse(self) -> Optional[Frame]:
        if len(self.buf) < 9:
            return None
        n = (self.buf[0] << 16) | (self.buf[1] << 8) | self.buf[2]
        if len(self.buf) < 9 + n:
            return None
        f = Frame(self.buf[3], self.buf[4], struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF, self.buf[9:9 + n])
        self.buf = self.buf[9 + n:]
        self.frames.append(f)
        return f

    def read_frame(self, timeout: float = 2.0) -> Optional[Frame]:
        deadline = time.monotonic() + timeout
        while True:
            f = self._parse()
            if f is not None:
                return f
            left = deadline - time.monotonic()
            if left <= 0 or self.closed or not self._fill(left):
                return self._parse()

    def wait_for(self, pred, timeout: float = 3.0) -> Optional[Frame]:
        """The first frame matching ``pred``; None at timeout or once the peer closed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            f = self.read_frame(deadline - time.monotonic())
            if f is None:
                if self.closed:
                    return None
                continue
            if pred(f):
                return f
        return None

    def wait_goaway_or_close(self, timeout: float = 3.0) -> Tuple[str, Optional[Frame]]:
        """("goaway", frame), ("closed", None) or ("timeout", None). Reads (and drops) any
        other frames on the way; after a GOAWAY, keeps reading until close or timeout."""
        f = self.wait_for(lambda f: f.type == GOAWAY, timeout)
        if f is not None:
            return "goaway", f
        return ("closed", None) if self.closed else ("timeout", None)

    def drain_until_closed(self, timeout: float = 3.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.buf = b""
            self._fill(deadline - time.monotonic())
        return self.closed

    def goaways(self) -> List[Frame]:
        return [f for f in self.frames if f.type == GOAWAY]

    def resets(self, stream: Optional[int] = None) -> List[Frame]:
        return [f for f in self.frames if f.type == RST_STREAM and (stream is None or f.stream == stream)]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
