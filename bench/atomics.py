#!/usr/bin/env python3
"""The share of a gateway's CPU samples that wait on atomic instructions.

    bench/atomics.py PERF_DATA BINARY [TOP]

Reads a `perf record -e cpu-clock` file of BINARY (bench/profile.sh with PROFILE_TOOL=perf
keeps one) and counts the samples whose instruction pointer is the instruction right after a
`lock`-prefixed one or an `xchg` with memory. A timer interrupt is taken between
instructions, so a slow instruction shows up in the samples of the one after it; an atomic
read-modify-write is slow when another core holds its cache line (a count or a lock every
request thread writes), and never free (about 20 cycles, the store buffer drained). Prints
that share of all samples and of the binary's, by instruction and by function.

Needs perf, objdump, readelf and nm (Debian: linux-perf, binutils).
"""
import bisect
import collections
import re
import subprocess
import sys


def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def load_segments(binary):
    """LOAD segments as (file offset, virtual address, file size)."""
    segs = []
    for line in run("readelf", "-lW", binary).splitlines():
        p = line.split()
        if p and p[0] == "LOAD":
            segs.append((int(p[1], 16), int(p[2], 16), int(p[4], 16)))
    return segs


def previous_instructions(binary):
    """address -> the text of the instruction before it."""
    prev, last = {}, None
    out = subprocess.Popen(["objdump", "-d", "--no-show-raw-insn", binary],
                           stdout=subprocess.PIPE, text=True)
    for line in out.stdout:
        m = re.match(r"^\s*([0-9a-f]+):\t(.*)$", line)
        if not m:
            continue
        addr = int(m.group(1), 16)
        if last is not None:
            prev[addr] = last
        last = m.group(2).strip()
    out.wait()
    return prev


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    data, binary = sys.argv[1], sys.argv[2]
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    name = binary.rsplit("/", 1)[-1]
    segs = load_segments(binary)
    # The binary's executable mappings: (start, length, file offset).
    maps, samples = [], []
    script = run("perf", "script", "-i", data, "-F", "ip,dso", "--show-mmap-events")
    for line in script.splitlines():
        if "PERF_RECORD_MMAP" in line:
            m = re.search(r"\[(0x[0-9a-f]+)\((0x[0-9a-f]+)\) @ (0x[0-9a-f]+|0) .*\]: r-xp (\S+)", line)
            if m and m.group(4).endswith("/" + name):
                maps.append((int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16)))
            continue
        p = line.split()
        if len(p) >= 2 and re.fullmatch(r"[0-9a-f]+", p[0]):
            samples.append((int(p[0], 16), p[1]))

    def vaddr(ip):
        for start, length, off in maps:
            if start <= ip < start + length:
                file_off = ip - start + off
                for s_off, s_vaddr, s_size in segs:
                    if s_off <= file_off < s_off + s_size:
                        return file_off - s_off + s_vaddr
        return None

    prev = previous_instructions(binary)
    syms = []
    for line in run("nm", "-C", "--defined-only", binary).splitlines():
        p = line.split(" ", 2)
        if len(p) == 3 and p[1] in "tTwW":
            syms.append((int(p[0], 16), p[2]))
    syms.sort()
    starts = [s[0] for s in syms]

    total = in_binary = atomic = 0
    by_insn, by_fn, fn_all = collections.Counter(), collections.Counter(), collections.Counter()
    for ip, _dso in samples:
        total += 1
        addr = vaddr(ip)
        if addr is None:
            continue
        in_binary += 1
        i = bisect.bisect_right(starts, addr) - 1
        fn = syms[i][1][:110] if i >= 0 else "?"
        fn_all[fn] += 1
        before = prev.get(addr, "")
        if before.startswith("lock") or (before.startswith("xchg") and "(" in before):
            atomic += 1
            by_insn[" ".join(before.split()[:2])] += 1
            by_fn[fn] += 1
    if not in_binary:
        print(f"atomics: no samples in {binary}'s code", file=sys.stderr)
        sys.exit(1)
    print(f"{atomic / total * 100:.1f}% of all samples ({atomic / in_binary * 100:.1f}% of the "
          f"{in_binary} in {name}'s own code) follow an atomic instruction")
    print("by instruction: " + ", ".join(f"{k} {v / total * 100:.1f}%" for k, v in by_insn.most_common(6)))
    print("  of all  of the function's  function")
    for fn, n in by_fn.most_common(top):
        print(f"{n / total * 100:7.2f}%  {n / fn_all[fn] * 100:16.0f}%  {fn}")


if __name__ == "__main__":
    main()
