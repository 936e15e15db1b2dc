"""What every benchmark in bench/ shares: interleaved timing, medians with their spread, peak memory, and a training step.

Timings are taken round by round in a shuffled order, so that the noise of a shared machine hits every case alike;
reported numbers are medians over rounds with their min-max spread, and ratios are formed within one run.
"""
import random, resource, statistics, time
import torch
from twa.model import reconstruction_loss


def interleaved_times(fns: dict, rounds: int = 5, min_time: float = 0.0, warmup: int = 2, sync=lambda: None) -> dict:
    "Seconds per call of each of `fns` (name -> zero-argument callable), at least `rounds` calls each, interleaved in shuffled order."
    for fn in fns.values():
        for _ in range(warmup): fn()
    sync()
    times, start, order = {k: [] for k in fns}, time.perf_counter(), list(fns)
    while min(map(len, times.values())) < rounds or time.perf_counter() - start < min_time * len(fns):
        random.shuffle(order)
        for k in order:
            t0 = time.perf_counter(); fns[k](); sync(); times[k].append(time.perf_counter() - t0)
    return times


def median_spread(xs) -> tuple[float, float, float]:
    "Median, min and max of `xs`."
    return statistics.median(xs), min(xs), max(xs)


def peak_memory_mb(device='cpu') -> float:
    "Peak memory so far: CUDA allocated on a GPU, else this process's maximum resident set (Linux reports KiB)."
    if torch.device(device).type == 'cuda': return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_step(model, opt, video, amp: bool = False):
    "A zero-argument callable doing one training step of `model` on `video` with the training loss (`reconstruction_loss`)."
    def step():
        with torch.autocast(video.device.type, dtype=torch.bfloat16, enabled=amp):
            recon = model(video)[0]
        loss = reconstruction_loss(recon, video)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    return step


def markdown_table(table) -> str:
    "A pandas DataFrame as a markdown table (no extra dependency)."
    rows = ['| ' + ' | '.join(map(str, r)) + ' |' for r in table.itertuples(index=False)]
    return f"| {' | '.join(map(str, table.columns))} |\n|{'---|' * len(table.columns)}\n" + '\n'.join(rows) + '\n'
