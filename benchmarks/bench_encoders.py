"""Embedding speed of EfficientNet-Lite0 (real weights): fp32 vs bf16 channels-last, one run.

Variants: ``fp32`` (the default: channels-last), ``fp32-nchw`` (contiguous
layout) and ``bf16`` (channels-last + ``torch.autocast(bfloat16)``).

    pytest benchmarks/bench_encoders.py --benchmark-only
    pytest benchmarks/bench_encoders.py --benchmark-only --benchmark-json=bench.json

Each benchmark embeds one batch of BATCH images at 224 x 224 through
``Encoder.embed`` (normalisation + network + copy to numpy), so
``BATCH / mean`` is images per second; it is also stored in ``extra_info``.
``test_ratio`` times the variants back to back in the same process and records
``bf16_over_fp32`` and ``nchw_over_channels_last`` (> 1: the first is faster).

On CPUs without native bf16 (AVX2 only, no AVX-512-BF16/AMX) bf16 autocast is
emulated and far slower than fp32, which is why ``precision=fp32`` is the
default. Measured on the 2-core AMD EPYC (AVX2) dev box, BATCH=8, lightly
loaded: fp32 channels-last 49.7 images/s, fp32 NCHW 32.6, bf16 channels-last
4.2 (bf16_over_fp32 0.085, nchw_over_channels_last 0.66).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from cxrbench.encoders import ENCODERS

BATCH = 8  # small: bf16 runs at well under 1 image/s on AVX2-only CPUs


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.rand(BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def encoders():
    return {
        "fp32": ENCODERS.create("efficientnet-lite0"),
        "fp32-nchw": ENCODERS.create("efficientnet-lite0", channels_last=False),
        "bf16": ENCODERS.create("efficientnet-lite0", precision="bf16"),
    }


def _record(benchmark, name: str) -> None:
    stats = benchmark.stats.stats
    benchmark.extra_info[f"{name}_images_per_s"] = BATCH / stats.mean
    benchmark.extra_info["cpu"] = torch.backends.cpu.get_cpu_capability()
    benchmark.extra_info["threads"] = torch.get_num_threads()


@pytest.mark.parametrize("precision", ["fp32", "fp32-nchw", "bf16"])
def test_efficientnet_lite0_embed(benchmark, encoders, batch, precision):
    enc = encoders[precision]
    enc.embed(batch[:2])  # warm-up: oneDNN primitive creation
    out = benchmark.pedantic(enc.embed, args=(batch,), rounds=2, iterations=1)
    assert out.shape == (BATCH, 1280) and np.isfinite(out).all()
    _record(benchmark, precision)


def test_ratio(benchmark, encoders, batch):
    """All variants back to back, interleaved; records the speed ratios."""
    times: dict[str, list[float]] = {p: [] for p in encoders}

    def both() -> None:
        for p, enc in encoders.items():
            t0 = time.perf_counter()
            enc.embed(batch)
            times[p].append(time.perf_counter() - t0)

    for enc in encoders.values():
        enc.embed(batch[:2])
    benchmark.pedantic(both, rounds=2, iterations=1)
    ips = {p: BATCH / float(np.median(t)) for p, t in times.items()}
    benchmark.extra_info.update({f"{p}_images_per_s": v for p, v in ips.items()})
    benchmark.extra_info["bf16_over_fp32"] = ips["bf16"] / ips["fp32"]
    benchmark.extra_info["nchw_over_channels_last"] = ips["fp32-nchw"] / ips["fp32"]
    benchmark.extra_info["cpu"] = torch.backends.cpu.get_cpu_capability()
