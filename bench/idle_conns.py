#!/usr/bin/env python3
"""Open N HTTP/1.1 keep-alive connections to HOST:PORT, send one request on each, read its
response, and keep them all open and idle until SIGTERM/SIGINT or --hold seconds pass.
Prints `READY <open> <failed> [reasons]` once every connection is settled, so the caller can
read the gateway's memory while they are held, then `DONE <still open>` when it lets go.

Usage: idle_conns.py HOST PORT N [--hold SECONDS] [--header 'Name: value']...
"""
import asyncio
import resource
import signal
import sys


async def open_one(host, port, request, sem, conns, failures):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            length, chunked = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
            if chunked:
                await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 10)
            elif length:
                await asyncio.wait_for(reader.readexactly(length), 10)
            if status != 200:
                failures.append(f"status {status}")
            conns.append((reader, writer))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError, IndexError) as e:
            failures.append(type(e).__name__)


async def main():
    args = sys.argv[1:]
    if len(args) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, n = args[0], int(args[1]), int(args[2])
    hold, headers = 120.0, []
    rest = iter(args[3:])
    for arg in rest:
        if arg == "--hold":
            hold = float(next(rest))
        elif arg == "--header":
            headers.append(next(rest))
        else:
            print(f"unexpected argument {arg}", file=sys.stderr)
            return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, n + 1024) if hard != resource.RLIM_INFINITY else n + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    request = (
        f"GET /idle HTTP/1.1\r\nHost: {host}:{port}\r\n"
        + "".join(f"{h}\r\n" for h in headers)
        + "\r\n"
    ).encode()
    conns, failures = [], []
    sem = asyncio.Semaphore(256)
    await asyncio.gather(*(open_one(host, port, request, sem, conns, failures) for _ in range(n)))
    reasons = sorted(set(failures))
    print(f"READY {len(conns)} {len(failures)} {' '.join(reasons[:5])}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), hold)
    except asyncio.TimeoutError:
        pass
    # Still open? A gateway that closed idle connections early shows here.
    alive = sum(1 for r, _ in conns if not r.at_eof())
    for _, w in conns:
        w.close()
    print(f"DONE {alive}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
