#!/usr/bin/env python3
"""Heap allocations per request, by where they are made: the difference of two DHAT profiles
(valgrind --tool=dhat) of the same gateway serving SMALL and LARGE requests, divided by
LARGE - SMALL, so start-up and shutdown cancel out.

    dhat_diff.py SMALL_FILE LARGE_FILE REQUESTS [TOP]

Each allocation is attributed to its first frame in code of our own (palisade::, pingora,
h2::, http::, tokio::, ...) below the allocator and the standard library's containers, with
the frame that called it, so `Vec::push` in Pingora's header map is told from a `String`
made in Palisade's access log.
"""
import json
import sys
from collections import defaultdict

# Frames that only pass an allocation on: the allocator, and std's containers.
PASS_ON = (
    "malloc", "calloc", "realloc", "free", "mi_", "_mi_", "__rust_", "__rdl_", "alloc::",
    "<alloc::", "core::", "<core::", "std::", "<std::", "hashbrown::", "<hashbrown::",
    "bytes::", "<bytes::", "smallvec::", "<smallvec::", "???", "0x",
)


def frame_name(f):
    # DHAT frames read "0x1234: function (file:line)" or "[root]"
    name = f.split(": ", 1)[1] if ": " in f else f
    return name.rsplit(" (", 1)[0].strip()


def passes_on(f):
    """A frame of the allocator or the standard library. Newer valgrinds name a frame inlined
    into another by its bare function name ("alloc", "with_capacity_in<u8, ...>") or as
    "UnknownInlinedFun"; the standard library's own are told by their file, under library/."""
    name = frame_name(f)
    return (
        name.startswith(PASS_ON)
        or name == "UnknownInlinedFun"
        or " (library/" in f
    )


def sites(path):
    with open(path) as fh:
        d = json.load(fh)
    ftbl = d["ftbl"]
    out = defaultdict(lambda: [0, 0])
    for pp in d["pps"]:
        frames = [ftbl[i] for i in pp["fs"]]
        names = [frame_name(f) for f in frames]
        own = [frame_name(f) for f in frames if not passes_on(f)]
        key = " <- ".join(own[:2]) if own else (names[0] if names else "?")
        out[key][0] += pp["tbk"]
        out[key][1] += pp["tb"]
    return out


def main():
    small, large, n = sites(sys.argv[1]), sites(sys.argv[2]), int(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 40
    rows = []
    for key, (blocks, size) in large.items():
        b0, s0 = small.get(key, (0, 0))
        per = (blocks - b0) / n
        if per >= 0.05:
            rows.append((per, (size - s0) / max(blocks - b0, 1), key))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    size = sum(r[0] * r[1] for r in rows)
    print(f"{total:.1f} allocations, {size:,.0f} bytes per request (sites with at least 0.05 each)")
    print("  per req  bytes each  where (first own frame <- its caller)")
    for per, size, key in rows[:top]:
        print(f"{per:9.2f}  {size:10.0f}  {key[:180]}")


if __name__ == "__main__":
    main()
