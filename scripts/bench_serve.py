"""Latency of ``sparktile serve`` per backend, and its overhead over a direct run, in one run.

    python -m sparktile.scripts.bench_serve [--tokens 32] [--repeat 3] [--rtl-mesh 2x2]
                                            [--clients 8]

For each backend (golden; rtl on a small mesh when ``--rtl-mesh`` is given) it times the same
request (prompt, seed, temperature, max_tokens) three ways: the backend called directly (for
the rtl backend this is what ``sparktile run`` does: one simulator run), through the server
non-streamed, and through the server streamed (time to first byte, tokens/s). The overhead is
the server's wall time over the direct call's, both the best of ``--repeat`` (and the ratio
of the medians), the three interleaved so that a change in load touches all alike. Then
``--clients`` clients at once: all must be served, and the order in which the server finished
them is printed beside the order they arrived.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.request

PROMPT = "def fibonacci(n):\n"


def post(url: str, body: dict):
    """(seconds to the first byte, seconds in all, parsed lines or object)."""
    req = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=3600) as resp:
        first = resp.read(1)
        t1 = time.perf_counter()
        rest = first + resp.read()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t0, rest.decode()


def bench_backend(backend, tokens: int, repeat: int) -> dict:
    from sparktile.serve import CompletionRequest, create_app, serving
    req = dict(prompt=PROMPT, max_tokens=tokens, seed=5, temperature=0.8)
    direct, whole, ttfb, streamed = [], [], [], []
    with serving(create_app(backend)) as url:
        # Interleaved, so that a change in the machine's load touches all three alike.
        for _ in range(repeat):
            t0 = time.perf_counter()
            backend.generate(CompletionRequest(**req), lambda s: None, lambda: False)
            direct.append(time.perf_counter() - t0)
            _, total, _ = post(url, req)
            whole.append(total)
            first, total, _ = post(url, {**req, "stream": True})
            ttfb.append(first)
            streamed.append(total)
    return {"backend": backend.name, "direct_s": min(direct), "server_s": min(whole),
            "overhead": min(whole) / min(direct) - 1,
            "overhead_median": statistics.median(whole) / statistics.median(direct) - 1,
            "overhead_ms": (min(whole) - min(direct)) * 1e3, "ttfb_s": min(ttfb),
            "stream_tokens_per_s": tokens / min(streamed)}


def bench_clients(backend, clients: int) -> dict:
    from sparktile.serve import create_app, serving
    arrived, finished, errors = [], [], []
    lock = threading.Lock()
    with serving(create_app(backend)) as url:
        def one(i):
            with lock:
                arrived.append(i)
            try:
                post(url, {"prompt": f"# {i}\n", "max_tokens": 8, "seed": i})
                with lock:
                    finished.append(i)
            except Exception as exc:  # noqa: BLE001 - counted and printed
                errors.append(repr(exc))
        threads = []
        for i in range(clients):
            threads.append(threading.Thread(target=one, args=(i,)))
            threads[-1].start()
            time.sleep(0.02)           # a definite arrival order
        for t in threads:
            t.join()
    return {"clients": clients, "served": len(finished), "errors": errors,
            "arrived": arrived, "finished": finished}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rtl-mesh", default=None, help="also the rtl backend on this mesh")
    ap.add_argument("--clients", type=int, default=8)
    a = ap.parse_args(argv)
    from sparktile.serve import GoldenBackend, RtlBackend
    golden = GoldenBackend()
    rows = [bench_backend(golden, a.tokens, a.repeat)]
    if a.rtl_mesh:
        from sparktile.hdl.mesh import parse_mesh
        rows.append(bench_backend(RtlBackend(parse_mesh(a.rtl_mesh)), a.tokens, a.repeat))
    print(f"{'backend':<8} {'direct s':>9} {'server s':>9} {'overhead':>9} {'(median)':>9} "
          f"{'ms/req':>7} {'TTFB s':>8} {'stream tok/s':>13}")
    for r in rows:
        print(f"{r['backend']:<8} {r['direct_s']:>9.3f} {r['server_s']:>9.3f} "
              f"{r['overhead']:>+8.1%} {r['overhead_median']:>+8.1%} {r['overhead_ms']:>7.1f} "
              f"{r['ttfb_s']:>8.3f} {r['stream_tokens_per_s']:>13.1f}")
    c = bench_clients(golden, a.clients)
    print(f"{c['clients']} concurrent clients: {c['served']} served, {len(c['errors'])} "
          f"errors; arrived {c['arrived']}, finished {c['finished']}")


if __name__ == "__main__":
    main()
