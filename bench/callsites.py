#!/usr/bin/env python3
"""Call sites of one function in a callgrind file, per source line of the caller.

    bench/callsites.py CALLGRIND_FILE FUNCTION [REQUESTS]

Sums, for every place that calls a function whose name contains FUNCTION, the calls and
the inclusive instructions they cost, by (caller's source file and line, caller), and
prints the 45 costliest, divided by REQUESTS (default 1). With a build that has line
tables (CARGO_PROFILE_RELEASE_DEBUG=line-tables-only) the line is that of the call, inlined
frames included: `bench/callsites.py target/bench/profile/callgrind.full.12000 memcpy 12000`
named the sessions and heads Pingora moved by value (pingora-core patches 21 and 22).
Divide the PROFILE_LARGE file's figures by its request count for a per-request figure that
still includes start-up; compare with the PROFILE_SMALL file's to see what is per request.
"""
import collections
import re
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, target = sys.argv[1], sys.argv[2]
    requests = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    names = {}  # callgrind's compressed names: "(id) name" once, then "(id)"
    last = 0  # positions may be relative to the previous one: +N, -N, *
    current_fn = current_file = sub_file = None
    called = None
    sites = collections.defaultdict(lambda: [0, 0])

    def name(text):
        match = re.match(r"\((\d+)\)(?: (.*))?", text)
        if not match:
            return text
        if match.group(2) is not None:
            names[match.group(1)] = match.group(2)
        return names.get(match.group(1), "?")

    def position(token):
        nonlocal last
        if token.startswith("+"):
            last += int(token[1:])
        elif token.startswith("-"):
            last -= int(token[1:])
        elif token != "*":
            last = int(token)
        return last

    with open(path) as f:
        lines = iter(f.read().split("\n"))
    for line in lines:
        if not line:
            continue
        key, _, value = line.partition("=")
        if key == "fl":
            current_file = sub_file = name(value)
        elif key in ("fi", "fe"):
            sub_file = name(value)
        elif key == "fn":
            current_fn = name(value)
            sub_file = current_file
        elif key == "cfn":
            called = name(value)
        elif key in ("cfl", "cfi"):
            name(value)
        elif key == "calls":
            calls = int(value.split()[0])
            cost_line = next(lines).split()
            at = position(cost_line[0])
            if called and target in called:
                site = sites[(sub_file, at, current_fn)]
                site[0] += calls
                site[1] += int(cost_line[1])
            called = None
        elif line[0].isdigit() or line[0] in "+-*":
            position(line.split()[0])

    print(f"{'instr':>9} {'calls':>6}  caller's line  in caller  (per {requests:g})")
    for (file, at, caller), (calls, cost) in sorted(sites.items(), key=lambda kv: -kv[1][1])[:45]:
        short = (file or "?").split("/src/")[-1]
        print(f"{cost / requests:>9.1f} {calls / requests:>6.2f}  {short}:{at}  in {(caller or '?')[:80]}")


if __name__ == "__main__":
    main()
