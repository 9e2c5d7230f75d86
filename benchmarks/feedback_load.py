"""Load test of the feedback studio: many raters vote at once; every vote must be stored exactly once.

Starts ``rl4gen feedback serve`` on 127.0.0.1 in a subprocess (a SQLite file in WAL mode unless
--db names a URL), has --raters concurrent raters each post --votes votes as fast as the server
answers (each rater one request at a time, retrying a failed request with the same vote id),
then counts the stored votes through the admin export and prints p50/p95 latency and votes/s.

    python benchmarks/feedback_load.py                      # 50 raters x 100 votes
    python benchmarks/feedback_load.py --raters 8 --votes 10 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(db: str, admin: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RL4GEN_FEEDBACK_ADMIN_TOKEN": admin}
    src = Path(__file__).resolve().parents[1] / "src"
    env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    cmd = [sys.executable, "-m", "rl4gen", "feedback", "serve", "--db", db, "--port", str(port), "--rate-limit", "0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not answer within 60 s")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def rater(client: httpx.AsyncClient, token: str, samples: list[int], votes: int, latencies: list[float], retries: list[str]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    for i in range(votes):
        body = {"vote_id": uuid.uuid4().hex, "sample_id": samples[i % len(samples)], "value": "like" if i % 3 else "dislike"}
        for attempt in range(10):
            start = time.perf_counter()
            try:
                r = await client.post("/api/votes", json=body, headers=headers)
            except httpx.HTTPError as exc:
                retries.append(type(exc).__name__)
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            if r.status_code in (200, 201):
                latencies.append(time.perf_counter() - start)
                break
            if r.status_code < 500 and r.status_code != 429:
                raise RuntimeError(f"vote refused ({r.status_code}): {r.text}")
            retries.append(f"HTTP {r.status_code}")
            await asyncio.sleep(0.05 * (attempt + 1))
        else:
            raise RuntimeError(f"vote {body['vote_id']} failed 10 times")


async def run(base: str, admin: str, raters: int, votes: int) -> dict[str, Any]:
    admin_h = {"X-Admin-Token": admin}
    limits = httpx.Limits(max_connections=raters + 4, max_keepalive_connections=raters + 4)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        samples = [{"prompt": f"{i}+{i}=", "completion": str(2 * i + k), "model_version": f"v{k}"} for i in range(20) for k in (0, 1)]
        r = await client.post("/api/admin/samples", json={"samples": samples, "source": f"load-{uuid.uuid4().hex[:8]}"}, headers=admin_h)
        r.raise_for_status()
        invites = (await client.post("/api/admin/invites", json={"count": raters}, headers=admin_h)).json()["invites"]
        tokens = [(await client.post("/api/join", json={"invite": t, "name": f"rater{i}"})).json()["token"] for i, t in enumerate(invites)]
        before = (await client.get("/api/stats", headers=admin_h)).json()["votes"]
        ids = list(range(1, len(samples) + 1))
        latencies: list[float] = []
        retries: list[str] = []
        start = time.perf_counter()
        await asyncio.gather(*(rater(client, t, ids, votes, latencies, retries) for t in tokens))
        elapsed = time.perf_counter() - start
        stats = (await client.get("/api/stats", headers=admin_h)).json()
        export = (await client.get("/api/admin/export", params={"format": "ratings"}, headers=admin_h)).text
    vote_ids = [json.loads(line)["vote_id"] for line in export.splitlines() if line]
    per_rater = {r["rater"]: r["votes"] for r in stats["raters"]}
    ordered = sorted(latencies)
    return {
        "raters": raters,
        "votes_per_rater": votes,
        "sent": raters * votes,
        "stored": stats["votes"] - before,
        "unique_vote_ids": len(set(vote_ids)),
        "exported": len(vote_ids),
        "every_rater_complete": all(per_rater.get(f"rater{i}") == votes for i in range(raters)),
        "retries": len(retries),
        "retry_reasons": dict(Counter(retries)),
        "seconds": elapsed,
        "votes_per_s": raters * votes / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
        "max_ms": 1000 * ordered[-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raters", type=int, default=50)
    parser.add_argument("--votes", type=int, default=100, help="votes per rater")
    parser.add_argument("--db", default=None, help="SQLite file or database URL (default: a fresh temporary SQLite file)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    admin = secrets.token_urlsafe(24)
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or str(Path(tmp) / "load.db")
        log = Path(tmp) / "server.log"
        server = start_server(db, admin, port, log)
        client_cpu = time.process_time()
        server_cpu = _cpu_seconds(server.pid)
        try:
            result = asyncio.run(run(f"http://127.0.0.1:{port}", admin, args.raters, args.votes))
            result["server_cpu_s"] = _cpu_seconds(server.pid) - server_cpu
            result["client_cpu_s"] = time.process_time() - client_cpu
        finally:
            server.terminate()
            server.wait(timeout=30)
            errors = [line for line in log.read_text(errors="replace").splitlines() if "Error" in line or "Traceback" in line]
            if errors:
                print(f"server log ({len(errors)} error lines), last: {errors[-1]}")
    ok = result["stored"] == result["sent"] == result["unique_vote_ids"] and result["every_rater_complete"]
    print(f"{result['raters']} raters x {result['votes_per_rater']} votes: sent {result['sent']}, stored {result['stored']}, "
          f"unique {result['unique_vote_ids']}, retries {result['retries']} {result['retry_reasons'] or ''} -> {'every vote stored once' if ok else 'MISMATCH'}")
    print(f"latency p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, max {result['max_ms']:.1f} ms; "
          f"{result['votes_per_s']:.0f} votes/s over {result['seconds']:.1f} s")
    print(f"CPU: server {result['server_cpu_s']:.1f} s ({1000 * result['server_cpu_s'] / result['sent']:.1f} ms a vote), "
          f"clients {result['client_cpu_s']:.1f} s, over {result['seconds']:.1f} s of wall time")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
