#!/usr/bin/env python3
"""Summarize a dhat heap profile (dhat-heap.json, dhatFileVersion 2) for scripts/heap.sh.

    dhat_top.py PROFILE.json [--streams N] [--gmax K] [--end K] [--frames F]

Prints the allocation sites with the most bytes live at the global peak (t-gmax) and at the
end (t-end), each with bytes, blocks, bytes per stream (bytes / N) and a compact backtrace: the
first non-std frame when it is a helper crate (bytes, tokio, serde_json...), then the first F
frames in shardgate, hyper, hyper_util, h2, glommio, rustls or futures_rustls, then ("in ...")
the first shardgate frame outside src/shard/ (past the runtime glue) when not among them.
Sites (dhat program points) with the same compact backtrace are merged. Last, the bytes at
t-gmax rolled up by that shardgate frame: where the gateway can act. Standard library only.

dhat counts the bytes asked of the allocator, not resident pages: allocator overhead, freed
memory the allocator keeps (mimalloc's pages, glibc's arenas), thread stacks and glommio's
io_uring buffers (mmap) are not in it.
"""

import argparse
import json
import re
import sys
from collections import defaultdict

# Crates whose frames name a site (the gateway and the stack it is built on).
OURS = ("shardgate", "hyper", "hyper_util", "h2", "glommio", "rustls", "futures_rustls")
# Frames that never name a site: the allocator, the profiler, std and the unwinder.
SKIP = ("dhat", "alloc", "core", "std", "backtrace", "__rust")
FRAME = re.compile(r"^\S+: (?P<name>.*) \((?P<file>.*):(?P<line>\d+):(?P<col>\d+)\)$")


def crate_of(name, path):
    """The crate of a frame: from the symbol's path (`<hyper::X<T> as Y>::f` -> hyper) when the
    debug info names it, else from a registry source path (`bytes-1.12.1/src/...` -> bytes)."""
    n = re.sub(r"^(?:[<&*]|mut |dyn )+", "", name)
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", n)
    if m:
        return m.group(1)
    if name.startswith("__"):
        return "__rust"
    m = re.match(r"([A-Za-z0-9_]+(?:-[A-Za-z_][A-Za-z0-9_]*)*)-\d+\.\d+\.\d+", path)
    return m.group(1).replace("-", "_") if m else ""


def src_path(crate, path):
    """`src-abc123/src/main.rs` or `providers/openai/stream.rs` -> `src/...` for our crate."""
    if crate != "shardgate" or path.startswith("src/"):
        return path
    i = path.find("/src/")
    return path[i + 1:] if i >= 0 else "src/" + path


def strip_generics(name):
    """Drop generic arguments (`Buffered<T,B>` -> `Buffered`), keep `<A as B>` qualifiers."""
    out, depth = [], 0
    for i, ch in enumerate(name):
        if ch == "<" and i > 0 and (name[i - 1].isalnum() or name[i - 1] in "_>"):
            depth += 1
        elif ch == ">" and depth > 0:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def short_name(name):
    s = strip_generics(name).replace("{{closure}}", "{closure}")
    # `<A as some::path::Trait>::f` -> `<A as Trait>::f`
    s = re.sub(r" as (?:[A-Za-z0-9_]+::)+([A-Za-z0-9_]+)>", r" as \1>", s)
    s = re.sub(r"(::\{closure\})+", "::{closure}", s)
    return s if len(s) <= 90 else s[:87] + "..."


class Frames:
    def __init__(self, ftbl):
        self.parsed = []
        for f in ftbl:
            m = FRAME.match(f)
            if m is None:
                self.parsed.append(("", f, "", 0))
                continue
            name, path = m.group("name"), m.group("file")
            crate = crate_of(name, path)
            self.parsed.append(
                (crate, short_name(name), src_path(crate, path), int(m.group("line")))
            )

    def describe(self, fs, frames):
        """(helper, [our frames], first shardgate frame) for one backtrace."""
        helper, ours, first_sg = None, [], None
        for idx in fs:
            crate, name, path, line = self.parsed[idx]
            if not crate or crate in SKIP or name.startswith("[root]"):
                continue
            where = f"{name} ({path}:{line})"
            if crate in OURS:
                # The gateway's own code names the site, past the runtime glue in src/shard/
                # (`shard::spawn`, `rt::Watched`) that every task and connection goes through.
                if first_sg is None and crate == "shardgate" and not path.startswith("src/shard/"):
                    first_sg = where
                if len(ours) < frames and (not ours or ours[-1] != where):
                    ours.append(where)
            elif not ours and helper is None:
                helper = f"[{crate}] {name}"
            if len(ours) >= frames and first_sg is not None:
                break
        return helper, ours, first_sg


def kib(b):
    return f"{b / 1024:,.1f}"


def table(title, rows, streams, total, top):
    print(f"\n== {title}: {kib(total)} KiB live"
          + (f", {total / streams:,.0f} B per stream" if streams else "") + " ==")
    print(f"{'#':>3} {'KiB':>10} {'blocks':>9} {'B/stream':>9} {'blk/str':>7} {'sites':>5}  site")
    for i, (key, b, bk, n) in enumerate(rows[:top], 1):
        helper, ours, sg = key
        per = f"{b / streams:,.0f}" if streams else "-"
        perk = f"{bk / streams:.2f}" if streams else "-"
        print(f"{i:>3} {kib(b):>10} {bk:>9,} {per:>9} {perk:>7} {n:>5}  "
              + (ours[0] if ours else helper or "(no frame in the listed crates)"))
        lines = [f"via {helper}"] if helper and ours else []
        lines += [f"<- {o}" for o in ours[1:]]
        if sg and sg not in ours:
            lines.append(f"in {sg}")
        for line in lines:
            print(f"{'':>51}{line}")


def ranked(pps, frames, bytes_key, blocks_key, depth):
    merged = defaultdict(lambda: [0, 0, 0])
    for pp in pps:
        b = pp.get(bytes_key, 0)
        if not b:
            continue
        helper, ours, sg = frames.describe(pp["fs"], depth)
        m = merged[(helper, tuple(ours), sg)]
        m[0] += b
        m[1] += pp.get(blocks_key, 0)
        m[2] += 1
    rows = [(k, v[0], v[1], v[2]) for k, v in merged.items()]
    rows.sort(key=lambda r: -r[1])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profile")
    ap.add_argument("--streams", type=int, default=0, help="divide by N concurrent streams")
    ap.add_argument("--gmax", type=int, default=15, help="sites listed at t-gmax")
    ap.add_argument("--end", type=int, default=10, help="sites listed at t-end")
    ap.add_argument("--frames", type=int, default=3, help="our frames per site")
    a = ap.parse_args()

    with open(a.profile, encoding="utf-8") as f:
        prof = json.load(f)
    if prof.get("dhatFileVersion") != 2 or prof.get("mode") != "rust-heap":
        sys.exit(f"{a.profile}: not a dhat heap profile (version 2)")
    pps, frames, n = prof["pps"], Frames(prof["ftbl"]), a.streams
    tot = lambda k: sum(pp.get(k, 0) for pp in pps)  # noqa: E731
    print(f"dhat profile {a.profile}: {len(pps):,} sites; allocated in all "
          f"{tot('tb') / 2**20:,.1f} MiB in {tot('tbk'):,} blocks; t-gmax at "
          f"{prof.get('tg', 0) / 1e6:.1f} s of {prof['te'] / 1e6:.1f} s"
          + (f"; per stream: N = {n:,}" if n else ""))

    table("t-gmax (global peak)", ranked(pps, frames, "gb", "gbk", a.frames), n,
          tot("gb"), a.gmax)
    table("t-end (after drain and shutdown)", ranked(pps, frames, "eb", "ebk", a.frames), n,
          tot("eb"), a.end)

    # Roll-up: where in the gateway the peak's bytes were asked for.
    by_sg = defaultdict(lambda: [0, 0])
    for pp in pps:
        if pp.get("gb"):
            _, _, sg = frames.describe(pp["fs"], 1)
            by_sg[sg or "(no shardgate frame)"][0] += pp["gb"]
            by_sg[sg or "(no shardgate frame)"][1] += pp.get("gbk", 0)
    print("\n== t-gmax by first shardgate frame outside src/shard/ ==")
    print(f"{'KiB':>10} {'blocks':>9} {'B/stream':>9}  frame")
    for where, (b, bk) in sorted(by_sg.items(), key=lambda kv: -kv[1][0])[:12]:
        per = f"{b / n:,.0f}" if n else "-"
        print(f"{kib(b):>10} {bk:>9,} {per:>9}  {where}")


if __name__ == "__main__":
    main()
