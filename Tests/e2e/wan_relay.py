#!/usr/bin/env python3
"""WAN relay for the Insight end-to-end suite: a TCP relay that adds latency.

Every chunk read on one side is written to the other side ``delay_ms`` after it
*arrived* (not cumulatively: a burst of chunks arriving together leaves
together, ``delay_ms`` later), in both directions, preserving order. A
half-close (EOF) is passed on after the same delay. TCP_NODELAY is set on both
sockets so the relay adds no Nagle delay of its own.

Standalone::

    python3 wan_relay.py --listen 127.0.0.1:9000 --target 127.0.0.1:8080 --delay-ms 20

As a module::

    relay = WanRelay(("127.0.0.1", 0), ("127.0.0.1", 8080), delay_ms=20)
    relay.start_in_thread()          # or: await relay.start() on your own loop
    ... relay.port ...
    relay.stop()

``relay.stats`` counts chunks per direction and the observed extra delay
(how late the writes were compared with their deadlines), so a test can use
the relay's *actual* added latency as ground truth. Delays are accurate to
~0.1 ms (see ``_sleep_until``).
"""

import argparse
import asyncio
import collections
import signal
import socket
import sys
import threading
from typing import Optional, Tuple

_EOF = object()
# The last part of every delay is spent yielding to the loop instead of in epoll.
_SPIN = 0.0015


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class RelayStats:
    def __init__(self):
        self.lock = threading.Lock()
        self.chunks = collections.Counter()      # direction -> chunks
        self.bytes = collections.Counter()       # direction -> bytes
        self.late_sum = collections.Counter()    # direction -> sum of (write time - deadline), s
        self.late_max = collections.defaultdict(float)
        self.connections = 0

    def add(self, direction: str, nbytes: int, late: float) -> None:
        with self.lock:
            self.chunks[direction] += 1
            self.bytes[direction] += nbytes
            self.late_sum[direction] += late
            self.late_max[direction] = max(self.late_max[direction], late)

    def mean_late_ms(self, direction: str) -> float:
        with self.lock:
            n = self.chunks[direction]
            return 1000.0 * self.late_sum[direction] / n if n else 0.0


class WanRelay:
    def __init__(self, listen: Tuple[str, int], target: Tuple[str, int], delay_ms: float):
        self.listen = listen
        self.target = target
        self.delay = delay_ms / 1000.0
        self.stats = RelayStats()
        self.port: Optional[int] = None
        self._server: Optional[asyncio.base_events.Server] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._tasks = set()

    # -- asyncio API -------------------------------------------------------

    async def start(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._handle, self.listen[0], self.listen[1])
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.stats.connections += 1
        try:
            try:
                up_r, up_w = await asyncio.open_connection(*self.target)
            except OSError:
                down_w.close()
                return
            _nodelay(down_w)
            _nodelay(up_w)
            pumps = [
                asyncio.ensure_future(self._pump(down_r, up_w, "upstream")),
                asyncio.ensure_future(self._pump(up_r, down_w, "downstream")),
            ]
            try:
                await asyncio.gather(*pumps)
            finally:
                for p in pumps:
                    p.cancel()
                for w in (up_w, down_w):
                    try:
                        w.close()
                    except Exception:
                        pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        """Reader and writer are decoupled by a queue of (deadline, chunk) so
        that reading never waits for a delayed write (no cumulative delay)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def read_side():
            try:
                while True:
                    data = await reader.read(65536)
                    now = loop.time()
                    if not data:
                        queue.put_nowait((now + self.delay, _EOF))
                        return
                    queue.put_nowait((now + self.delay, data))
            except (ConnectionError, OSError):
                queue.put_nowait((loop.time(), _EOF))

        async def write_side():
            while True:
                deadline, data = await queue.get()
                await self._sleep_until(loop, deadline)
                late = max(0.0, loop.time() - deadline)
                if data is _EOF:
                    try:
                        if writer.can_write_eof():
                            writer.write_eof()
                    except (ConnectionError, OSError, RuntimeError):
                        pass
                    return
                try:
                    writer.write(data)
                    if writer.transport.get_write_buffer_size() > 1 << 20:
                        await writer.drain()
                except (ConnectionError, OSError):
                    return
                self.stats.add(direction, len(data), late)

        rt = asyncio.ensure_future(read_side())
        try:
            await write_side()
        finally:
            rt.cancel()

    @staticmethod
    async def _sleep_until(loop, deadline: float) -> None:
        """asyncio timers ride on epoll's millisecond timeouts (rounded up), so a
        plain sleep overshoots by ~1 ms. Sleep to just before the deadline, then
        yield to the loop (cooperatively: other chunks keep flowing) until it."""
        wait = deadline - loop.time()
        if wait > _SPIN:
            await asyncio.sleep(wait - _SPIN)
        while loop.time() < deadline:
            await asyncio.sleep(0)

    # -- thread API --------------------------------------------------------

    def start_in_thread(self, timeout: float = 5.0) -> int:
        ready = threading.Event()
        error = []

        def run():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except Exception as e:  # bind failure etc.
                error.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.close())
            loop.close()

        self._thread = threading.Thread(target=run, name="wan-relay", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("wan relay did not start")
        if error:
            raise error[0]
        return self.port

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


def _hostport(s: str) -> Tuple[str, int]:
    host, _, port = s.rpartition(":")
    return (host or "127.0.0.1", int(port))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="TCP relay that delays every chunk by --delay-ms in each direction")
    p.add_argument("--listen", required=True, help="HOST:PORT to listen on (port 0: pick one)")
    p.add_argument("--target", required=True, help="HOST:PORT to connect to")
    p.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay per direction (ms)")
    args = p.parse_args(argv)

    relay = WanRelay(_hostport(args.listen), _hostport(args.target), args.delay_ms)

    async def run():
        await relay.start()
        print(f"listening on {relay.listen[0]}:{relay.port} -> {args.target} delay {args.delay_ms}ms", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await relay.close()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
