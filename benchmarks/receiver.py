"""Latency of a signed delivery to `tap-whoop webhooks` while hostile clients hold sockets.

Why: WHOOP counts a delivery as failed when the answer takes more than a second, and sends it
again (about five times over an hour). Slow clients (a request a byte at a time) and floods of
idle connections each hold a socket; the receiver must keep answering WHOOP within that second.

The receiver (the tap's own `WebhookServer`, a real SQLite inbox) serves on loopback in this
process; each scenario opens its hostile sockets, then sends `--deliveries` signed deliveries,
each on a new connection as WHOOP's come, and times each from send to answer.

    python benchmarks/receiver.py [--deliveries 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import _common as c
import requests

from tap_whoop.run import Run
from tap_whoop.stores.file import TokenStore
from tap_whoop.webhooks.receiver import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_PATH,
    Receiver,
    WebhookServer,
    sign,
)

USER_ID = 10129
HEAD = b"POST /webhooks/whoop HTTP/1.1\r\nHost: whoop\r\nContent-Length: 100\r\n\r\n"
SCENARIOS = {"quiet": (0, 0), "150 slow clients": (150, 0), "400 idle connections": (0, 400)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=200)
    args = parser.parse_args()
    rows, result = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "tokens.json"
        TokenStore(store).write(
            {"version": 1, "members": {"alice": {"refresh_token": "r", "user_id": USER_ID}}}
        )
        config = {"client_id": c.CLIENT_ID, "client_secret": c.CLIENT_SECRET}
        run = Run({**config, "token_store_path": str(store)})
        server = WebhookServer(Receiver(run), "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        try:
            for name, (slow, idle) in SCENARIOS.items():
                times = scenario(server.port, slow, idle, args.deliveries)
                ordered = sorted(times)
                p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
                rows.append(
                    [name, len(times), c.median(times) * 1000, p99 * 1000, ordered[-1] * 1000]
                )
                result[name] = {
                    "deliveries": len(times),
                    "median_ms": round(c.median(times) * 1000, 1),
                    "p99_ms": round(p99 * 1000, 1),
                    "max_ms": round(ordered[-1] * 1000, 1),
                }
        finally:
            server.stop()
            thread.join(15)
    print(c.table(["while", "deliveries", "median ms", "p99 ms", "max ms"], rows))
    print(f"saved {c.save('receiver', result)}")


def scenario(port: int, slow: int, idle: int, deliveries: int) -> list[float]:
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(slow + idle)]
    stop = threading.Event()

    def trickle() -> None:
        index = 0
        while not stop.wait(0.5):
            for sock in held[:slow]:
                with contextlib.suppress(OSError):
                    sock.send(HEAD[index % len(HEAD) : index % len(HEAD) + 1])
            index += 1

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    times = []
    try:
        time.sleep(1.0)
        for _ in range(deliveries):
            body = json.dumps(
                {
                    "user_id": USER_ID,
                    "id": str(uuid.uuid4()),
                    "type": "sleep.updated",
                    "trace_id": uuid.uuid4().hex,
                }
            ).encode()
            stamp = str(int(time.time() * 1000))
            headers = {
                TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: sign(c.CLIENT_SECRET, stamp, body),
                "Content-Type": "application/json",
            }
            started = time.perf_counter()
            response = requests.post(
                f"http://127.0.0.1:{port}{WEBHOOK_PATH}", data=body, headers=headers, timeout=10
            )
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    finally:
        stop.set()
        trickler.join(5)
        for sock in held:
            sock.close()
    return times


if __name__ == "__main__":
    main()
