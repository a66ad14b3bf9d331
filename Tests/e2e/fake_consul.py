#!/usr/bin/env python3
"""A fake Consul agent for the probe discovery tests: just the health endpoint.

    GET /v1/health/service/<name>[?passing][&dc=DC][&tag=TAG][&index=N&wait=DUR]

As Consul documents it:

- ``passing``: only entries whose checks are all ``passing``;
- ``dc``: the datacenter (default: ``default_dc``); an unknown one is ``500 No path to
  datacenter``, like Consul;
- ``tag``: only services carrying that tag;
- blocking queries: with ``index=N`` the request waits until the result's index is greater
  than N or ``wait`` (default 5m, at most 10m) passes, then answers with the current
  result either way; every answer carries ``X-Consul-Index``;
- ACL: with ``token`` set, a request without ``X-Consul-Token: <token>`` (or
  ``?token=``) gets ``403 Permission denied``.

The index is per (service, datacenter): the value of a global counter when it last
changed (at least 1). ``reset_index(n)`` moves the counter back (like a restored snapshot):
indexes then go backwards for clients.

Fault injection (``set_fault``): ``"500"`` (500 response), ``"slow"`` (never answer until
the fault is cleared), ``"malformed"`` (200 with broken JSON), ``"garbage"`` (not HTTP at
all), ``"no_index"`` (200 without X-Consul-Index), ``"huge"`` (200 with a valid answer padded
to 9 MiB, over the sidecar's 8 MiB bound). ``refuse()`` stops listening,
``resume()`` listens again on the same port. Setting a fault also wakes blocked queries so
they answer with it at once.

Use in-process (``FakeConsul().start()``) or standalone:
``python3 fake_consul.py --port 8500 --token secret`` (then it serves an empty catalog).
"""

import argparse
import json
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple

MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0


def parse_wait(value: str) -> float:
    """Consul's wait: a Go duration ("10s", "1m", "500ms") or plain seconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m|h)?\s*", value or "")
    if not m:
        return DEFAULT_WAIT
    n = float(m.group(1))
    unit = m.group(2) or "s"
    return min(MAX_WAIT, n * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit])


def entry(service: str, sid: str, port: int, address: str = "", node_address: str = "127.0.0.1",
          node: str = "node1", tags: Optional[List[str]] = None, status: str = "passing") -> dict:
    """One /v1/health/service result entry (Node, Service, Checks); dc is filled in by set_service."""
    return {
        "Node": {"ID": f"{node}-id", "Node": node, "Address": node_address, "Datacenter": "",
                 "TaggedAddresses": {"lan": node_address}, "Meta": {}},
        "Service": {"ID": sid, "Service": service, "Tags": list(tags or []), "Address": address,
                    "Port": port, "Meta": {}, "Weights": {"Passing": 1, "Warning": 1},
                    "EnableTagOverride": False},
        "Checks": [
            {"Node": node, "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
             "ServiceID": "", "ServiceName": ""},
            {"Node": node, "CheckID": f"service:{sid}", "Name": f"Service '{service}' check",
             "Status": status, "ServiceID": sid, "ServiceName": service},
        ],
    }


class FakeConsul:
    def __init__(self, port: int = 0, token: Optional[str] = None, default_dc: str = "dc1",
                 datacenters: Tuple[str, ...] = ("dc1", "dc2")):
        self.host = "127.0.0.1"
        self.port = port
        self.token = token
        self.default_dc = default_dc
        self.datacenters = set(datacenters)
        self.cond = threading.Condition()
        self.counter = 10                       # the global (raft) index
        self.services: Dict[Tuple[str, str], List[dict]] = {}
        self.modify: Dict[Tuple[str, str], int] = {}
        self.fault: Optional[str] = None
        self.generation = 0                     # bumped on every fault change
        self.requests: List[dict] = []          # what clients asked, for assertions
        self.responses: List[Tuple[float, int, Optional[str]]] = []  # (time, status, fault)
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ---- catalog -------------------------------------------------------------

    def set_service(self, name: str, entries: List[dict], dc: Optional[str] = None) -> int:
        """Replace the instances of ``name`` in ``dc``; wakes blocked queries. -> new index."""
        dc = dc or self.default_dc
        with self.cond:
            self.counter += 1
            stored = json.loads(json.dumps(entries))
            for e in stored:
                e["Node"]["Datacenter"] = dc
            self.services[(name, dc)] = stored
            self.modify[(name, dc)] = self.counter
            self.cond.notify_all()
            return self.counter

    def index_of(self, name: str, dc: str) -> int:
        with self.cond:
            return max(1, self.modify.get((name, dc), self.counter))

    def reset_index(self, to: int = 1) -> None:
        """Move every index back to at most ``to`` (a restored snapshot / new cluster)."""
        with self.cond:
            self.counter = to
            for k in self.modify:
                self.modify[k] = min(self.modify[k], to)
            self.cond.notify_all()

    # ---- faults ----------------------------------------------------------------

    def set_fault(self, fault: Optional[str]) -> None:
        assert fault in (None, "500", "slow", "malformed", "garbage", "no_index", "huge"), fault
        with self.cond:
            self.fault = fault
            self.generation += 1
            self.cond.notify_all()

    def clear_fault(self) -> None:
        self.set_fault(None)

    def refuse(self) -> None:
        """Stop listening (connections are refused); blocked queries still answer."""
        srv, self._server = self._server, None
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def resume(self) -> None:
        self._listen()

    # ---- lifecycle ---------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "FakeConsul":
        self._listen()
        return self

    def stop(self) -> None:
        with self.cond:
            self.fault = None
            self.generation += 1
            self.cond.notify_all()
        self.refuse()

    def _listen(self) -> None:
        consul = self

        class Handler(_Handler):
            fake = consul

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

        srv = Server((self.host, self.port), Handler)
        self.port = srv.server_address[1]
        self._server = srv
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-consul-{self.port}", daemon=True)
        self._thread.start()

    # ---- assertions helpers ------------------------------------------------------

    def requests_for(self, name: str) -> List[dict]:
        with self.cond:
            return [r for r in self.requests if r["service"] == name]

    def ok_responses_since(self, t: float) -> int:
        with self.cond:
            return sum(1 for (at, status, fault) in self.responses if at >= t and status == 200 and not fault)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeConsul = None  # set by the subclass
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes, index: Optional[int] = None,
              content_type: str = "application/json") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if index is not None:
                self.send_header("X-Consul-Index", str(index))
                self.send_header("X-Consul-KnownLeader", "true")
                self.send_header("X-Consul-LastContact", "0")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            pass  # the client gave up

    def do_GET(self):  # noqa: N802
        fake = self.fake
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        m = re.fullmatch(r"/v1/health/service/([^/]+)", url.path)
        record = {"t": time.monotonic(), "path": self.path, "query": {k: v[-1] for k, v in q.items()},
                  "token": self.headers.get("X-Consul-Token"), "service": None}
        if m:
            record["service"] = urllib.parse.unquote(m.group(1))
        with fake.cond:
            fake.requests.append(record)
        if not m:
            self._respond(404, b"404 page not found", None, "text/plain")
            return
        name = record["service"]
        token = self.headers.get("X-Consul-Token") or q.get("token", [None])[-1]
        if fake.token is not None and token != fake.token:
            self._respond(403, b"Permission denied", None, "text/plain")
            return
        dc = q.get("dc", [fake.default_dc])[-1] or fake.default_dc
        if dc not in fake.datacenters:
            self._respond(500, b"No path to datacenter", None, "text/plain")
            return

        deadline = None
        if "index" in q:
            try:
                min_index = int(q["index"][-1])
            except ValueError:
                self._respond(400, b"Invalid index", None, "text/plain")
                return
            deadline = time.monotonic() + parse_wait(q.get("wait", [""])[-1])
        with fake.cond:
            gen = fake.generation
            if deadline is not None:
                while (fake.index_of(name, dc) <= min_index and fake.generation == gen
                       and fake.fault is None):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    fake.cond.wait(min(left, 0.5))
            fault = fake.fault
            index = fake.index_of(name, dc)
            entries = json.loads(json.dumps(fake.services.get((name, dc), [])))

        if fault == "slow":
            with fake.cond:
                while fake.fault == "slow":
                    fake.cond.wait(0.5)
            # The client has long given up; answer into the void (or to a patient client).
            fault = fake.fault
            index = fake.index_of(name, dc)
        if fault == "500":
            self._respond(500, b"rpc error making call: injected failure", None, "text/plain", fault)
            return
        if fault == "garbage":
            try:
                self.wfile.write(b"\x00\x01 this is not HTTP at all\r\n\r\n")
                self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True
            self._log_response(0, fault)
            return
        if fault == "malformed":
            self._respond(200, b'[{"Node": {"Node": "n1", "Address": ', index, "application/json", fault)
            return

        if "passing" in q:
            entries = [e for e in entries if all(c["Status"] == "passing" for c in e["Checks"])]
        if "tag" in q:
            tag = q["tag"][-1]
            entries = [e for e in entries if tag in (e["Service"].get("Tags") or [])]
        body = json.dumps(entries).encode()
        if fault == "huge":
            body = body[:-1] + b" " * (9 << 20) + b"]"
        self._respond(200, body, None if fault == "no_index" else index, "application/json", fault)

    def _respond(self, status, body, index, content_type, fault=None):
        self._send(status, body, index, content_type)
        self._log_response(status, fault)

    def _log_response(self, status, fault):
        with self.fake.cond:
            self.fake.responses.append((time.monotonic(), status, fault))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--token")
    args = parser.parse_args(argv)
    fake = FakeConsul(port=args.port, token=args.token).start()
    print(f"listening on {fake.address}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
