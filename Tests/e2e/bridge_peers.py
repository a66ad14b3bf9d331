"""Peers for the stream-bridge tests (test_bridge.py, issue 11) and the soak benchmark.

- ``BridgeUpstream``: an h2c upstream on Python ``h2`` (asyncio, on a ``_LoopThread``) whose
  behaviour is chosen by the last segment of ``:path``:

  ==================  =====================================================================
  ``Early``           answers on HEADERS at once with HEADERS + END_STREAM (``:status 200``,
                      ``grpc-status: 3``), never reads the request body (no WINDOW_UPDATE)
                      and never resets the stream
  ``BigHeaders``      response HEADERS of ``big_header_bytes`` (~6 KB, unique values, so
                      HPACK cannot shrink them) with END_STREAM, no body
  ``SpaceMessage``    HEADERS, one empty message, trailers ``grpc-status: 3`` and
                      ``grpc-message: "bad input "`` (a trailing space)
  ``SpaceMessageTO``  the same status as a trailers-only response
  ``BadMessage``      like ``SpaceMessage`` with a ``grpc-message`` holding CR LF, which
                      RFC 9113 calls malformed (a control: still to be rejected)
  ``Refuse``          reads the whole request, then RST_STREAM REFUSED_STREAM
  ``Stall``           never reads the request body (no WINDOW_UPDATE) and never answers
  anything else       like a gRPC unary echo: once the request has ended, HEADERS, the
                      request body as the response body, trailers ``grpc-status: 0``
  ==================  =====================================================================

  Every request's headers are recorded in ``requests`` (name, value as str).
  ``initial_window`` is the SETTINGS_INITIAL_WINDOW_SIZE it advertises (from its first
  SETTINGS frame), ``max_concurrent_streams`` its SETTINGS_MAX_CONCURRENT_STREAMS (if set). ``close_all()`` sends GOAWAY (last stream = highest seen), stops answering
  streams above it, and closes every connection ``linger`` seconds later.

- ``H2Client``: a blocking ``h2`` client on a raw socket that collects per-stream results.
- ``BigHeadersFlooder``: a client that sends small GETs at a fixed rate and never reads its
  socket (HEADERS framed by hand, header blocks encoded with ``hpack``).
- ``GoodClient``: a well-behaved grpcio client doing unary calls back to back; ``own_channel``:
  a grpcio channel that does not share its connection with other channels.
- ``rss_mb`` / ``RssSampler``: the sidecar's VmRSS over time; ``LoopThread``: an asyncio loop
  thread for ``BridgeUpstream`` outside pytest.
"""

import asyncio
import collections
import os
import socket
import struct
import threading
import time
from typing import Dict, List, Optional, Tuple

import grpc

import h2raw as r

UNARY = "/insight.test.v1.Test/Unary"
BRIDGE_SERVICE = "/bridge.v1.Bridge/"
EARLY_MESSAGE = "early answer"
SPACE_MESSAGE = "bad input "
BAD_MESSAGE = "bad\r\ninput"


def _h2_config(client_side: bool):
    import h2.config
    return h2.config.H2Configuration(client_side=client_side, header_encoding=None,
                                     validate_inbound_headers=False,
                                     validate_outbound_headers=False,
                                     normalize_outbound_headers=False,
                                     normalize_inbound_headers=False)


def _new_connection(client_side: bool, settings: Optional[Dict[int, int]] = None):
    """An ``H2Connection`` whose first SETTINGS frame carries ``settings``."""
    import h2.connection
    import h2.settings
    c = h2.connection.H2Connection(config=_h2_config(client_side))
    values = {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
              h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 20}
    values.update(settings or {})
    c.local_settings = h2.settings.Settings(client=client_side, initial_values=values)
    c.initiate_connection()
    return c


class LoopThread:
    """An asyncio loop on a daemon thread (what conftest's ``_LoopThread`` is, without
    pytest, for Benchmarks/soak)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bridge-peers", daemon=True)
        self.thread.start()

    def run(self, coro, timeout=5.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def grpc_frame(payload: bytes) -> bytes:
    return b"\0" + struct.pack(">I", len(payload)) + payload


# --------------------------------------------------------------------------
# upstream
# --------------------------------------------------------------------------

class BridgeUpstream:
    """See the module docstring. ``helpers`` is a conftest ``_LoopThread``."""

    def __init__(self, helpers, initial_window: int = 65535, conn_window_increment: int = 16 << 20,
                 big_header_bytes: int = 6000, max_concurrent_streams: Optional[int] = None):
        self.helpers = helpers
        self.max_concurrent_streams = max_concurrent_streams
        self.initial_window = initial_window
        self.conn_window_increment = conn_window_increment
        self.big_header_bytes = big_header_bytes
        self.port: Optional[int] = None
        self.requests: List[List[Tuple[str, str]]] = []
        self.seen = collections.Counter()
        self.errors: List[str] = []
        self.early_data_bytes = 0     # request DATA that arrived on Early streams (never acknowledged)
        self.resets_received: List[Tuple[int, int]] = []  # (stream, code) from the sidecar
        self.connections_total = 0
        self._server = None
        self._conns: List[dict] = []

    # ---- lifecycle ----

    async def _start(self):
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> "BridgeUpstream":
        self.helpers.run(self._start())
        return self

    def stop(self):
        async def close():
            self._server.close()
            for st in list(self._conns):
                st["writer"].close()
        try:
            self.helpers.run(close())
        except Exception:
            pass

    def open_connections(self) -> int:
        return len(self._conns)

    def close_all(self, linger: float = 0.3) -> int:
        """GOAWAY(NO_ERROR, highest stream seen) on every connection, then close them all
        ``linger`` s later. Returns how many connections were closed."""
        async def go():
            conns = list(self._conns)
            for st in conns:
                c = st["h2"]
                st["goaway_last"] = c.highest_inbound_stream_id
                try:
                    st["writer"].write(c.data_to_send() + r.goaway(st["goaway_last"], r.NO_ERROR))
                except Exception:
                    pass
            await asyncio.sleep(linger)
            for st in conns:
                try:
                    st["writer"].write(st["h2"].data_to_send())
                except Exception:
                    pass
                st["writer"].close()
            return len(conns)
        return self.helpers.run(go(), timeout=linger + 5)

    # ---- one connection ----

    async def _handle(self, reader, writer):
        import h2.events as ev
        import h2.settings
        self.connections_total += 1
        ours = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.initial_window}
        if self.max_concurrent_streams is not None:
            ours[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = self.max_concurrent_streams
        c = _new_connection(False, ours)
        if self.conn_window_increment:
            c.increment_flow_control_window(self.conn_window_increment)
        st = {"h2": c, "writer": writer, "goaway_last": None}
        self._conns.append(st)
        bodies: Dict[int, bytearray] = {}
        methods: Dict[int, str] = {}
        headers_of: Dict[int, Dict[str, str]] = {}

        def flush():
            data = c.data_to_send()
            if data:
                writer.write(data)

        try:
            writer.write(c.data_to_send())
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for e in c.receive_data(data):
                    sid = getattr(e, "stream_id", None)
                    if st["goaway_last"] is not None and sid and sid > st["goaway_last"]:
                        continue  # above our GOAWAY: never processed
                    if isinstance(e, ev.RequestReceived):
                        hdrs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in e.headers]
                        self.requests.append(hdrs)
                        hd = dict(hdrs)
                        method = hd.get(":path", "").rsplit("/", 1)[-1]
                        self.seen[method] += 1
                        methods[sid], bodies[sid], headers_of[sid] = method, bytearray(), hd
                        if method == "Early":
                            c.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                                 ("grpc-status", "3"), ("grpc-message", EARLY_MESSAGE)],
                                           end_stream=True)
                        elif method == "BigHeaders":
                            self._send_big_headers(c, sid)
                    elif isinstance(e, ev.DataReceived):
                        if methods.get(sid) == "Early":
                            self.early_data_bytes += e.flow_controlled_length
                            continue  # never read: no WINDOW_UPDATE, ever
                        if methods.get(sid) == "Stall":
                            continue  # never read, never answered
                        c.acknowledge_received_data(e.flow_controlled_length, sid)
                        if sid in bodies:
                            bodies[sid] += e.data
                    elif isinstance(e, ev.StreamReset):
                        self.resets_received.append((sid, e.error_code))
                        methods.pop(sid, None)
                        bodies.pop(sid, None)
                    if isinstance(e, ev.StreamEnded) and sid in methods:
                        self._answer(c, sid, methods.pop(sid), bytes(bodies.pop(sid, b"")),
                                     headers_of.pop(sid, {}))
                flush()
        except Exception as e:  # kept for assertions / debugging
            if not isinstance(e, (ConnectionError, asyncio.CancelledError)):
                self.errors.append(repr(e))
        finally:
            if st in self._conns:
                self._conns.remove(st)
            writer.close()

    def _send_big_headers(self, c, sid):
        n = max(1, self.big_header_bytes // 1000)
        hdrs = [(":status", "200"), ("content-type", "text/plain")]
        hdrs += [(f"x-big-{i}", os.urandom(492).hex()) for i in range(n)]  # 984 chars, unique
        c.send_headers(sid, hdrs, end_stream=True)

    def _answer(self, c, sid, method, body, hd):
        if method in ("Early", "BigHeaders"):
            return  # answered at HEADERS time
        if method == "Refuse":
            c.reset_stream(sid, r.REFUSED_STREAM)
            return
        if method == "SpaceMessageTO":
            c.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                 ("grpc-status", "3"), ("grpc-message", SPACE_MESSAGE)], end_stream=True)
            return
        c.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        if method in ("SpaceMessage", "BadMessage"):
            c.send_data(sid, grpc_frame(b""))
            message = SPACE_MESSAGE if method == "SpaceMessage" else BAD_MESSAGE
            c.send_headers(sid, [("grpc-status", "3"), ("grpc-message", message)], end_stream=True)
            return
        payload = body if body else grpc_frame(b"")
        # The echo is small (tests send at most a few hundred KB); split to the frame size.
        step = c.max_outbound_frame_size
        for i in range(0, len(payload), step):
            c.send_data(sid, payload[i:i + step])
        c.send_headers(sid, [("grpc-status", "0")], end_stream=True)


# --------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------

class StreamResult:
    def __init__(self):
        self.headers: Optional[List[Tuple[str, str]]] = None
        self.data = bytearray()
        self.trailers: Optional[List[Tuple[str, str]]] = None
        self.reset: Optional[int] = None
        self.ended = False

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    def field(self, name: str) -> Optional[str]:
        for block in (self.trailers or [], self.headers or []):
            for k, v in block:
                if k == name:
                    return v
        return None

    def __repr__(self):
        return (f"<stream headers={self.headers} data={len(self.data)}B trailers={self.trailers}"
                f" reset={self.reset} ended={self.ended}>")


class H2Client:
    """A blocking h2c client (prior knowledge) on a raw socket. ``settings``: our SETTINGS."""

    def __init__(self, port: int, settings: Optional[Dict[int, int]] = None, timeout: float = 5.0,
                 wait_settings: bool = True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = _new_connection(True, settings)
        self.streams: Dict[int, StreamResult] = {}
        self.goaway: Optional[int] = None
        self.closed = False
        self.remote_settings_seen = False
        self._flush()
        if wait_settings:  # the peer's windows, not the defaults, before any DATA
            deadline = time.monotonic() + timeout
            while not self.remote_settings_seen and time.monotonic() < deadline:
                if not self.pump(deadline - time.monotonic()):
                    break
            self.pump(0.05)  # a connection WINDOW_UPDATE usually follows the SETTINGS

    def _flush(self):
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def request(self, headers: List[Tuple[str, str]], body: bytes = b"", end_stream: bool = True,
                timeout: float = 5.0) -> int:
        """Sends HEADERS and ``body``, reading (and so waiting for window) as needed, for up to
        ``timeout`` s. Stops early if the stream ends or is reset meanwhile."""
        sid = self.conn.get_next_available_stream_id()
        s = self.streams[sid] = StreamResult()
        self.conn.send_headers(sid, headers, end_stream=end_stream and not body)
        self._flush()
        view = memoryview(body)
        deadline = time.monotonic() + timeout
        while view and not s.done and time.monotonic() < deadline:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(view))
            if room <= 0:
                if not self.pump(min(0.2, deadline - time.monotonic())):
                    break
                continue
            self.conn.send_data(sid, view[:room].tobytes(), end_stream=end_stream and room == len(view))
            view = view[room:]
            self._flush()
        return sid

    def pump(self, timeout: float) -> bool:
        """Reads for up to ``timeout`` s (one recv); False once the connection is closed."""
        import h2.events as ev
        if self.closed:
            return False
        self.sock.settimeout(max(timeout, 0.001))
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            return True
        except OSError:
            self.closed = True
            return False
        if not chunk:
            self.closed = True
            return False
        for e in self.conn.receive_data(chunk):
            sid = getattr(e, "stream_id", None)
            s = self.streams.get(sid)
            if isinstance(e, ev.ResponseReceived) and s:
                s.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in e.headers]
            elif isinstance(e, ev.DataReceived):
                if s:
                    s.data += e.data
                self.conn.acknowledge_received_data(e.flow_controlled_length, sid)
            elif isinstance(e, ev.TrailersReceived) and s:
                s.trailers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in e.headers]
            elif isinstance(e, ev.StreamReset) and s:
                s.reset = e.error_code
            elif isinstance(e, ev.ConnectionTerminated):
                self.goaway = e.error_code
            elif isinstance(e, ev.RemoteSettingsChanged):
                self.remote_settings_seen = True
            if s is not None and (isinstance(e, ev.StreamEnded) or getattr(e, "stream_ended", None)):
                s.ended = True
        self._flush()
        return True

    def wait(self, sid: int, timeout: float = 5.0) -> StreamResult:
        deadline = time.monotonic() + timeout
        s = self.streams[sid]
        while not s.done and time.monotonic() < deadline:
            if not self.pump(deadline - time.monotonic()):
                break
        return s

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


def grpc_request_headers(port: int, method_path: str, extra: List[Tuple[str, str]] = (),
                         te: str = "trailers") -> List[Tuple[str, str]]:
    return [(":method", "POST"), (":scheme", "http"), (":path", method_path),
            (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"),
            ("te", te)] + list(extra)


class BigHeadersFlooder:
    """Small GETs at ``rate`` per second on one connection that never reads its socket.
    HEADERS frames are built by hand (h2raw) around ``hpack``-encoded blocks, so nothing
    tracks stream state: the client keeps sending whatever the sidecar does. Runs in a
    thread; records whether the sidecar stopped reading (a send timed out) or closed."""

    def __init__(self, port: int, path: str = BRIDGE_SERVICE + "BigHeaders", rate: float = 400.0):
        import hpack
        self.port = port
        self.path = path
        self.rate = rate
        self.sent = 0
        self.stalled_at: Optional[float] = None
        self.closed_at: Optional[float] = None
        self.error: Optional[str] = None
        self._enc = hpack.Encoder()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The smallest receive buffer the kernel allows: the sidecar's writes back up at once.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.t0 = time.monotonic()

    def start(self) -> "BigHeadersFlooder":
        self.sock.sendall(r.PREFACE + r.settings([(r.S_INITIAL_WINDOW_SIZE, 65535)]))
        self._t.start()
        return self

    def _block(self) -> bytes:
        return self._enc.encode([(b":method", b"GET"), (b":scheme", b"http"), (b":path", self.path.encode()),
                                 (b":authority", b"flooder")])

    def _run(self):
        sid = 1
        batch = 8
        interval = batch / self.rate
        next_at = time.monotonic()
        pending = bytearray()  # whole frames not yet taken by the kernel: never cut a frame
        self.sock.settimeout(1.0)
        while not self._stop.is_set() and sid < (1 << 31) - 2 * batch:
            if not pending:
                for _ in range(batch):
                    pending += r.headers(sid, self._block(), end_stream=True)
                    sid += 2
                self.sent += batch
            try:
                n = self.sock.send(pending)
                del pending[:n]
            except socket.timeout:
                if self.stalled_at is None:
                    self.stalled_at = time.monotonic() - self.t0
                continue  # the sidecar stopped reading: keep trying, it is allowed to
            except OSError as e:
                self.closed_at = time.monotonic() - self.t0
                self.error = repr(e)
                return
            if pending:
                continue
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()

    def closed_by_peer(self) -> Optional[str]:
        """After ``stop``: reads what the sidecar sent (it is allowed to have closed the
        connection): 'goaway:<CODE>', 'closed' or None if the connection is still open."""
        self.sock.settimeout(0.5)
        buf = bytearray()
        eof = self.closed_at is not None
        deadline = time.monotonic() + 3.0
        try:
            while time.monotonic() < deadline:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    eof = True
                    break
                buf += chunk
        except socket.timeout:
            pass
        except OSError:
            eof = True
        return self._goaway_in(bytes(buf)) or ("closed" if eof else None)

    @staticmethod
    def _goaway_in(buf: bytes) -> Optional[str]:
        i = 0
        found = None
        while i + 9 <= len(buf):
            n = int.from_bytes(buf[i:i + 3], "big")
            if buf[i + 3] == r.GOAWAY and i + 9 + 8 <= len(buf):
                code = struct.unpack(">I", buf[i + 13:i + 17])[0]
                found = f"goaway:{r.ERROR_NAMES.get(code, code)}"
            i += 9 + n
        return found

    def stop(self):
        self._stop.set()
        self._t.join(5)

    def close(self):
        self.stop()
        try:
            self.sock.close()
        except OSError:
            pass


def own_channel(addr: str) -> grpc.Channel:
    """A grpcio channel with its own TCP connection. grpcio shares one connection among all
    channels to the same target with the same arguments (the global subchannel pool), so
    ``conftest.make_channel`` channels are one client to the sidecar, not several."""
    from conftest import CHANNEL_OPTIONS
    return grpc.insecure_channel(addr, options=CHANNEL_OPTIONS + [("grpc.use_local_subchannel_pool", 1)])


class GoodClient:
    """A well-behaved grpcio client: unary calls back to back on one channel (its own
    connection), ``pause`` s apart, each with a ``deadline``. Use as a context manager."""

    def __init__(self, addr: str, method: str = UNARY, deadline: float = 5.0, pause: float = 0.02):
        self.channel = own_channel(addr)
        self.call = self.channel.unary_unary(method)
        self.deadline = deadline
        self.pause = pause
        self.errors: List[str] = []
        self.ok = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                if self.call(b"ping", timeout=self.deadline) != b"ping":
                    self.errors.append("wrong payload")
                else:
                    self.ok += 1
            except grpc.RpcError as e:
                self.errors.append(f"{e.code()}: {e.details()}")
            self._stop.wait(self.pause)

    def __enter__(self):
        self.call(b"warmup", timeout=self.deadline)  # connected before anything else starts
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(self.deadline + 5)
        self.channel.close()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


class RssSampler:
    """VmRSS of ``pid`` every ``interval`` s in a thread, as (seconds since start, MiB)."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.pid = pid
        self.interval = interval
        self.samples: List[Tuple[float, float]] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic() - self.t0, rss_mb(self.pid)))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._t.join(2)

    def at(self, t: float) -> float:
        """The first sample at or after ``t`` s."""
        for ts, v in self.samples:
            if ts >= t:
                return v
        return self.samples[-1][1]

    def peak_after(self, t: float) -> float:
        return max(v for ts, v in self.samples if ts >= t)
