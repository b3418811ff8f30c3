"""Summarise a py-spy profile (raw collapsed stacks, ``--threads``) of a worker.

``python -m benchmarks run --scenario chain --profile`` attaches py-spy to the chain
scenario's worker for the measured phase and writes ``<out>/profile/chain-worker.collapsed.txt``
and this module's summary ``<out>/profile/profile.md``: samples per thread, then the top
functions by self time and by inclusive time, and self time per file.

Re-summarise a file: ``python -m benchmarks.profile PATH [--top N]``.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/", "/grctl/"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return ("grctl/" + tail) if marker == "/grctl/" else tail
    return path


def parse(path: Path) -> tuple[Counter[str], list[tuple[str, list[str], int]]]:
    """Returns samples per thread and (thread, frames root→leaf, count) per line."""
    threads: Counter[str] = Counter()
    stacks = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or " " not in line:
            continue
        stack, _, count_s = line.rpartition(" ")
        try:
            count = int(count_s)
        except ValueError:
            continue
        frames = stack.split(";")
        thread = "all"
        if frames and (frames[0].startswith("thread ") or frames[0].startswith("process ")):
            # "process N:..."; "thread (0x..)" or "thread (name)": keep the thread frame only
            while frames and (frames[0].startswith("process ") or frames[0].startswith("thread ")):
                if frames[0].startswith("thread "):
                    thread = frames[0]
                frames = frames[1:]
        threads[thread] += count
        stacks.append((thread, frames, count))
    return threads, stacks


def _func(frame: str, with_line: bool = False) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    loc = _short(m.group("file"))
    if with_line and m.group("line"):
        loc += f":{m.group('line')}"
    return f"{m.group('func')} ({loc})"


def summarize(path: Path, top: int = 25) -> str:
    threads, stacks = parse(path)
    total = sum(threads.values()) or 1
    self_fn: Counter[str] = Counter()
    self_line: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    per_file: Counter[str] = Counter()
    for _thread, frames, count in stacks:
        if not frames:
            continue
        leaf = frames[-1]
        self_fn[_func(leaf)] += count
        self_line[_func(leaf, True)] += count
        m = _FRAME.match(leaf)
        per_file[_short(m.group("file")) if m else leaf] += count
        for f in {_func(fr) for fr in frames}:
            incl[f] += count

    def table(title: str, c: Counter[str]) -> list[str]:
        rows = [f"### {title}", "", "| % of samples | samples | function |", "|---:|---:|---|"]
        rows += [f"| {100 * n / total:.1f} | {n} | `{k}` |" for k, n in c.most_common(top)]
        return [*rows, ""]

    out = [
        f"# Profile of {path.name}",
        "",
        f"{total} samples (py-spy, non-idle threads only). Samples per thread:",
        "",
        *[f"- {t}: {n} ({100 * n / total:.1f} %)" for t, n in threads.most_common()],
        "",
        *table("Self time by function", self_fn),
        *table("Self time by line", self_line),
        *table("Inclusive time by function", incl),
        *table("Self time by file", per_file),
    ]
    return "\n".join(out) + "\n"


def write_summary(path: Path, out_dir: Path, top: int = 25) -> Path:
    out = out_dir / "profile.md"
    out.write_text(summarize(path, top))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", type=Path)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    print(summarize(args.path, args.top))


if __name__ == "__main__":
    main()
