"""A/B timing of two PerformerBench builds on a shared, noisy machine.

    python benchmarks/ab.py OLD_BINARY NEW_BINARY favor 16384 [--rounds 5]

Runs the two binaries alternately (old, new, old, new, ...) with the same arguments, reads
every table row they print, and reports per row and column the median of each build and the
ratio new/old, so that slow phases of the host hit both builds alike.
"""
import argparse
import os
import statistics
import subprocess


def table_rows(binary, arguments):
    env = dict(os.environ, PERFORMER_BENCH_NO_PEAK="1")
    output = subprocess.run([binary, *arguments], env=env, check=True, capture_output=True, text=True).stdout
    header, rows = None, {}
    for line in output.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if header is None or not cells[0].replace(".", "").isdigit():
            header = cells
            continue
        timed = [name.endswith("ms") or "µs" in name for name in header]
        first = timed.index(True) if True in timed else len(header)
        key = tuple(cells[:first])  # the row's parameters (N, causal, …) up to the first timed column
        rows[key] = {name: float(value.rstrip("%×")) for name, value, is_time in zip(header, cells, timed) if is_time}
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("arguments", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    samples = {"old": [], "new": []}
    for _ in range(options.rounds):
        for name in ("old", "new"):
            samples[name].append(table_rows(getattr(options, name), options.arguments))
    for key in samples["old"][0]:
        for column in samples["old"][0][key]:
            old = statistics.median(run[key][column] for run in samples["old"])
            new = statistics.median(run[key][column] for run in samples["new"])
            print(f"{' '.join(key):>16} {column:>12}: old {old:9.2f}  new {new:9.2f}  new/old {new / old:.3f}")


if __name__ == "__main__":
    main()
