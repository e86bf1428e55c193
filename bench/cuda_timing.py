"""The bench scripts' one timing rule: median milliseconds of CUDA-event timings of a callable,
after warm-up calls (imported as ``cuda_timing`` by the scripts beside it)."""
import statistics

import torch


def median_ms(fn, reps=10, warmup=1):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
