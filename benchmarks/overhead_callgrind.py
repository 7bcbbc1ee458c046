"""Instructions per call of overhead.py's NumPy rows, under callgrind (deterministic where the
shared host's timings are not). One process for all rows: callgrind dumps its counters at each
os.getppid() (--dump-before=getppid), called before and after `--calls` calls of a row (after
50 warm-up calls), so the dump between two markers holds exactly those calls.

    python benchmarks/overhead_callgrind.py [--calls 200] [--out DIR] [substring ...]

prints "row: instructions per call"; the dumps stay in DIR (default a temporary directory) for
`callgrind_annotate --inclusive=yes DIR/cg.out.N`. Run with a libperformer.so stripped of its
DWARF only (`strip --strip-debug`): valgrind 3.19 cannot read the library's DWARF (docs/RELIABILITY.md).
Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def child(calls: int, names_file: str, only: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import overhead

    names = []
    for name, fn in overhead.numpy_cases():
        if only and not any(o in name for o in only):
            continue
        for _ in range(50):
            fn()
        os.getppid()  # marker: callgrind dumps here
        for _ in range(calls):
            fn()
        os.getppid()
        names.append(name)
    Path(names_file).write_text("\n".join(names) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--out", help="directory for the callgrind dumps (default: a temporary one)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("only", nargs="*", help="run only the rows whose name contains one of these")
    args = parser.parse_args()
    if args.child:
        child(args.calls, os.environ["PERFORMER_CALLGRIND_NAMES"], args.only)
        return
    out = Path(args.out or tempfile.mkdtemp(prefix="overhead-callgrind-"))
    out.mkdir(parents=True, exist_ok=True)
    names_file = out / "names"
    env = dict(os.environ, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1", PERFORMER_NUM_THREADS="1",
               PERFORMER_CALLGRIND_NAMES=str(names_file))
    subprocess.run(["valgrind", "--tool=callgrind", "--dump-before=getppid", f"--callgrind-out-file={out}/cg.out",
                    sys.executable, __file__, "--child", "--calls", str(args.calls), *args.only],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Dump 1 runs from the start to the first marker; dump 2i + 2 holds row i's calls.
    for i, name in enumerate(names_file.read_text().splitlines()):
        dump = out / f"cg.out.{2 * i + 2}"
        total = next(int(line.split()[1]) for line in dump.read_text().splitlines()
                     if line.startswith(("summary:", "totals:")))
        print(f"{name}: {total // args.calls}")
    print(f"dumps in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
