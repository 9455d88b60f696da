"""Forward speed of our modules against timm's implementation of the same design.

Both are timed in one process, interleaved (ours, timm, ours, timm, ...) so that machine drift
hits both alike; the figure is the ratio of medians ours / timm (< 1: ours is faster).
CPU, fp32, eval mode, no_grad, at the issue's shape (C=256, 56x56, batch 8) by default.

    python -m benchmarks.bench_vs_timm [--channels 256] [--size 56] [--batch 8] [--reps 30]

Exits non-zero when one of ours is slower than timm's beyond --tolerance.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

import modules


def timm_factories() -> dict[str, Callable[[int], nn.Module]]:
    """Our registry name -> the timm module of the same design (paper defaults where timm's differ)."""
    from timm.layers.cbam import CbamModule, ChannelAttn, SpatialAttn
    from timm.layers.coord_attn import CoordAttn
    from timm.layers.eca import CecaModule, EcaModule
    from timm.layers.global_context import GlobalContext
    from timm.layers.non_local_attn import NonLocalAttn
    from timm.layers.selective_kernel import SelectiveKernel
    from timm.layers.split_attn import SplitAttn
    from timm.layers.squeeze_excite import EffectiveSEModule, SEModule

    return {
        "se": lambda c: SEModule(c),
        "ese": lambda c: EffectiveSEModule(c),
        "eca": lambda c: EcaModule(channels=c),
        "eca_k3": lambda c: EcaModule(kernel_size=3),
        "eca_circular": lambda c: CecaModule(channels=c),
        "cbam": lambda c: CbamModule(c, mlp_bias=True),
        "cbam_channel": lambda c: ChannelAttn(c, mlp_bias=True),
        "cbam_spatial": lambda c: SpatialAttn(),
        "ge": _timm_gather_excite,
        "ca": lambda c: CoordAttn(c, rd_channels=max(8, c // 32), bias=True),
        "non_local": lambda c: NonLocalAttn(c, use_scale=False, rd_channels=c // 2),
        "gc_add": lambda c: GlobalContext(c, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16),
        "gc_scale": lambda c: GlobalContext(c, rd_ratio=1 / 16),
        "sk": lambda c: SelectiveKernel(c, c),
        "split_attn": lambda c: SplitAttn(c, c, norm_layer=nn.BatchNorm2d),
    }


def _timm_gather_excite(channels: int) -> nn.Module:
    """timm's GatherExcite with its MLP. timm 1.0.31 cannot build ``use_mlp=True`` (it passes
    ``*dd`` to ``ConvMlp``); build it without and attach the ``ConvMlp`` it meant to build."""
    from timm.layers.gather_excite import GatherExcite
    from timm.layers.helpers import make_divisible
    from timm.layers.mlp import ConvMlp

    try:
        return GatherExcite(channels)
    except TypeError:
        module = GatherExcite(channels, use_mlp=False)
        module.mlp = ConvMlp(channels, make_divisible(channels / 16, 1, round_limit=0.0), act_layer=nn.ReLU)
        return module


def time_once(module: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    module(x)
    return time.perf_counter() - start


def compare(name: str, timm_module: nn.Module, args: argparse.Namespace) -> dict[str, float]:
    ours = modules.create(name, args.channels).eval()
    timm_module = timm_module.eval()
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    ours_t, timm_t = [], []
    with torch.no_grad():
        for _ in range(args.warmup):
            ours(x)
            timm_module(x)
        for rep in range(args.reps):
            pair = [(ours, ours_t), (timm_module, timm_t)]
            for module, sink in pair if rep % 2 == 0 else reversed(pair):
                sink.append(time_once(module, x))
    ours_ms = statistics.median(ours_t) * 1e3
    timm_ms = statistics.median(timm_t) * 1e3
    return {"ours_ms": ours_ms, "timm_ms": timm_ms, "ratio": ours_ms / timm_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=256, help="channels C (default 256)")
    parser.add_argument("--size", type=int, default=56, help="H = W (default 56)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--reps", type=int, default=30, help="timed calls per module (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: all)")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="ratio above 1 + tolerance counts as slower (default 0.05: timing noise)")
    parser.add_argument("--only", default="*", help="fnmatch filter on our names (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    factories = {n: f for n, f in timm_factories().items() if n in modules.list_attention(args.only)}
    print(f"# torch {torch.__version__}, threads {args.threads}, fp32 CPU, eval/no_grad, "
          f"N={args.batch} C={args.channels} H=W={args.size}, {args.reps} interleaved reps, median")
    print(f"{'module':<14}{'ours ms':>10}{'timm ms':>10}{'ours/timm':>11}  verdict")
    slower = []
    for name, factory in factories.items():
        row = compare(name, factory(args.channels), args)
        verdict = "ok" if row["ratio"] <= 1 + args.tolerance else "SLOWER"
        if verdict != "ok":
            slower.append(name)
        print(f"{name:<14}{row['ours_ms']:>10.3f}{row['timm_ms']:>10.3f}{row['ratio']:>11.3f}  {verdict}")
    if slower:
        print(f"slower than timm: {', '.join(slower)}")
    return 1 if slower else 0


if __name__ == "__main__":
    sys.exit(main())
