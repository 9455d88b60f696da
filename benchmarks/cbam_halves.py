"""Why CBAM costs more than its channel and spatial halves: cache residency and fresh pages.

For batch 8, 256 channels and a range of map sizes, times (forward, no_grad, 1 thread, median of
interleaved blocks) the channel half alone, the spatial half alone, CBAM composed out of place
(``spatial(channel(x))``, what autograd needs) and CBAM as ``modules.cbam.Cbam`` runs without
autograd (the spatial gate scaling the channel-refined map in place), each under glibc's
default allocator and under the latency stage's steady one (``GLIBC_TUNABLES`` of
:data:`suite.timing.worker.ALLOCATOR_TUNABLES`: freed memory kept, so a new output reuses pages
instead of faulting in fresh ones). Every (allocator, size) is measured in a fresh process, the
four callables interleaved, ``--repeats`` processes each. Writes ``cbam_halves.csv`` and
``README.md`` into ``--out``::

    python -m benchmarks.cbam_halves --out reports/cbam_halves

Run it alone on the machine (check ``uptime``); it names the CPU in its output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from suite.env import cpu_model

SIZES = (14, 28, 40, 56, 72)
CALLABLES = ("channel", "spatial", "cbam_out_of_place", "cbam_module")


def _measure(batch: int, channels: int, size: int, rounds: int) -> dict[str, float]:
    """Median ms per call of each callable, in this process."""
    import torch

    import modules

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    x = torch.randn(batch, channels, size, size)
    cbam = modules.create("cbam", channels).eval()
    torch.nn.init.normal_(cbam.spatial.bn.weight)
    calls = {"channel": lambda: cbam.channel(x), "spatial": lambda: cbam.spatial(x),
             "cbam_out_of_place": lambda: cbam.spatial(cbam.channel(x)), "cbam_module": lambda: cbam(x)}

    def block(fn, k: int = 5) -> float:
        start = time.perf_counter()
        for _ in range(k):
            fn()
        return (time.perf_counter() - start) / k * 1e3

    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        for fn in calls.values():
            block(fn, 2)
        for _ in range(rounds):
            for name, fn in calls.items():
                times[name].append(block(fn))
    return {name: statistics.median(values) for name, values in times.items()}


def _child(argv: list[str]) -> int:
    batch, channels, size, rounds = (int(v) for v in argv)
    print(json.dumps(_measure(batch, channels, size, rounds)))
    return 0


def _run(allocator: str, batch: int, channels: int, size: int, rounds: int) -> dict[str, float]:
    """One fresh process's medians under ``allocator`` (``default`` or ``steady``)."""
    from suite.timing.worker import ALLOCATOR_TUNABLES

    env = dict(os.environ)
    env.pop("GLIBC_TUNABLES", None)
    if allocator == "steady":
        env["GLIBC_TUNABLES"] = ALLOCATOR_TUNABLES
    out = subprocess.run([sys.executable, "-m", "benchmarks.cbam_halves", "--child", str(batch), str(channels),
                          str(size), str(rounds)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("reports/cbam_halves"), help="output folder")
    parser.add_argument("--batch", type=int, default=8, help="batch (default 8)")
    parser.add_argument("--channels", type=int, default=256, help="channels (default 256)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="map sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved blocks per callable per process")
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per allocator and size")
    args = parser.parse_args(argv)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for allocator in ("default", "steady"):
            for repeat in range(args.repeats):
                ms = _run(allocator, args.batch, args.channels, size, args.rounds)
                rows.append({"size": size, "allocator": allocator, "repeat": repeat,
                             "tensor_mib": args.batch * args.channels * size * size * 4 / 2**20, **ms})
    frame = pd.DataFrame(rows)
    table = frame.groupby(["size", "allocator"], as_index=False).median(numeric_only=True).drop(columns="repeat")
    halves = table["channel"] + table["spatial"]
    table["out_of_place_over_halves"] = table["cbam_out_of_place"] / halves
    table["module_over_halves"] = table["cbam_module"] / halves
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "cbam_halves_runs.csv", index=False)
    table.to_csv(args.out / "cbam_halves.csv", index=False)
    import torch

    header = (f"# CBAM against its halves\n\n`python -m benchmarks.cbam_halves --out {args.out}` on {cpu_model()} "
              f"({os.cpu_count()} CPUs), torch {torch.__version__}, batch {args.batch}, {args.channels} channels, "
              f"1 thread, fp32, forward without autograd; ms per call, median of {args.rounds} interleaved "
              f"blocks, median of {args.repeats} processes per row.\n\n")
    lines = ["| size | tensor MiB | allocator | channel | spatial | CBAM out of place | CBAM module | "
             "out of place / halves | module / halves |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        lines.append(f"| {r['size']} | {r['tensor_mib']:.1f} | {r['allocator']} | {r['channel']:.2f} | "
                     f"{r['spatial']:.2f} | {r['cbam_out_of_place']:.2f} | {r['cbam_module']:.2f} | "
                     f"{r['out_of_place_over_halves']:.2f} | {r['module_over_halves']:.2f} |")
    (args.out / "README.md").write_text(header + "\n".join(lines) + "\n")
    print(header + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
