"""Interleaved wall-clock timing shared by the benchmarks: every contender once per round, so machine load
drifts affect all of them alike; callers take medians of the returned lists. rel_norm: the error measure they
report for reduced-precision contenders."""
from __future__ import annotations

import time
from typing import Callable

import torch


def interleaved_times(contenders: dict[str, Callable], runs: int, rotate: bool = False,
                      check: Callable | None = None, verbose: bool = True) -> dict[str, list[float]]:
    """One warm-up call each, then `runs` rounds; `rotate` changes who goes first each round; `check(name, out)`
    validates every timed result."""
    for fn in contenders.values():
        fn()
    names = list(contenders)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(runs):
        order = names[r % len(names):] + names[:r % len(names)] if rotate else names
        for name in order:
            start = time.perf_counter()
            out = contenders[name]()
            times[name].append(time.perf_counter() - start)
            if check is not None:
                check(name, out)
        if verbose:
            print(f"run {r + 1}/{runs}: " + ", ".join(f"{v[-1]:.2f}s" for v in times.values()), flush=True)
    return times


def rel_norm(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, in fp32."""
    return float((a.float() - b.float()).norm() / b.float().norm())
