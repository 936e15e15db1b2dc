"""Training-step benchmark: each variant's step time and FLOPs at the cpu preset, as ratios to `standard`'s.

    .venv/bin/python bench/train_step.py              # a table, written to bench/results/train_step.md and .csv
    .venv/bin/python bench/train_step.py --rounds 9   # more rounds (default 5)

For each variant of `twa.variants.VARIANTS`: the model of `run_config(variant, 'cpu')` (`SlotBasedVideoModel`), one
training step (forward, `reconstruction_loss`, backward, AdamW) on one batch of the preset's size from the `shapes`
training set. Step times are interleaved in one process (shuffled order each round, `bench/common.py`), so the noise of
a shared machine hits every variant alike; ratios are formed from the medians. FLOPs per step come from
`twa.model.count_flops` (forward + backward). `time ÷ FLOPs` is the step-time ratio divided by the FLOP ratio: 1.0 means
the variant's extra time is exactly its extra arithmetic.

The attention share is measured on separate steps with hooks on every attention layer (`CrossAttention` modules):
the time from a layer's forward call to its return, and from the gradient of its output to the gradients of its
inputs, over the whole step's time. `paths` counts the attention functions the layers called in one step
(`triple_attention` is the fast path, `*_map` the einsum map functions), so the table names the code it timed.
"""
import argparse, collections, os, time
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')   # before PyTorch loads OpenMP: spinning threads make a shared machine's noise 10-70x (bench/load.py)
from pathlib import Path
from unittest import mock
import pandas as pd
import torch
import twa.attention as A
from twa.config import run_config
from twa.data import ShapesDataset, collate
from twa.model import SlotBasedVideoModel, count_flops
from twa.variants import VARIANTS
from common import interleaved_times, markdown_table, median_spread, train_step

CORES = ('standard_attention', 'standard_attention_map', 'triple_attention', 'triple_attention_map', 'concat_attention', 'rank1_attention')


def setup(variant: str, seed: int = 0):
    "The cpu preset's model of `variant`, its optimizer and one training batch."
    run = run_config(variant, 'cpu')
    torch.manual_seed(seed)
    model = SlotBasedVideoModel(run.model)
    data = ShapesDataset('train', run.model.num_frames, run.model.image_size)
    video = collate([data[i] for i in range(run.train.batch_size)])['video']
    return model, torch.optim.AdamW(model.parameters(), lr=run.train.lr), video


def attention_seconds(model, step, steps: int = 3) -> tuple[float, float]:
    "Median seconds of a whole step and of its attention layers (forward and backward), over `steps` hooked steps."
    spent, starts, handles = [0.0], {}, []
    def begin(key): starts[key] = time.perf_counter()
    def end(key): spent[0] += time.perf_counter() - starts.pop(key)
    for m in model.modules():
        if isinstance(m, A.CrossAttention):
            handles += [m.register_forward_pre_hook(lambda mod, *a: begin(('f', id(mod)))),
                        m.register_forward_hook(lambda mod, *a: end(('f', id(mod)))),
                        m.register_full_backward_pre_hook(lambda mod, *a: begin(('b', id(mod)))),
                        m.register_full_backward_hook(lambda mod, *a: end(('b', id(mod))))]
    totals, parts = [], []
    try:
        for _ in range(steps):
            spent[0] = 0.0
            t0 = time.perf_counter(); step(); totals.append(time.perf_counter() - t0); parts.append(spent[0])
    finally:
        for h in handles: h.remove()
    return median_spread(totals)[0], median_spread(parts)[0]


def core_calls(step) -> str:
    "Which attention functions of `twa.attention` one step calls, and how often."
    spies = {name: mock.patch.object(A, name, wraps=getattr(A, name)) for name in CORES}
    mocks = {name: p.start() for name, p in spies.items()}
    try: step()
    finally:
        for p in spies.values(): p.stop()
    return ', '.join(f'{name} ×{m.call_count}' for name, m in mocks.items() if m.call_count)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rounds', type=int, default=5, help='timed steps per variant (interleaved)')
    ap.add_argument('--variants', nargs='*', default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'train_step'))
    args = ap.parse_args(argv)
    names = ['standard'] + [v for v in args.variants if v != 'standard']
    cases = {v: setup(v) for v in names}
    steps = {v: train_step(*cases[v]) for v in names}
    flops = {v: count_flops(cases[v][0], cases[v][2])['train_step'] for v in names}
    paths = {v: core_calls(steps[v]) for v in names}
    times = interleaved_times(steps, rounds=args.rounds)
    rows = []
    for v in names:
        t, lo, hi = median_spread(times[v])
        total, attn = attention_seconds(cases[v][0], steps[v])
        time_ratio, flop_ratio = t / median_spread(times['standard'])[0], flops[v] / flops['standard']
        rows.append(dict(variant=v, step_s=round(t, 4), step_spread_s=f'{lo:.4f}-{hi:.4f}', time_ratio=round(time_ratio, 2),
                         flop_ratio=round(flop_ratio, 2), time_per_flop_ratio=round(time_ratio / flop_ratio, 2),
                         attention_share=round(attn / total, 2), gflop_per_step=round(flops[v] / 1e9, 2), paths=paths[v]))
    table = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out + '.csv', index=False)
    run = run_config('standard', 'cpu')
    Path(args.out + '.md').write_text(
        f"Training step at the cpu preset (batch {run.train.batch_size}, {run.model.num_tokens} tokens, {run.model.num_slots} slots), "
        f"{args.rounds} interleaved rounds, {torch.get_num_threads()} threads, torch {torch.__version__}. Ratios to `standard`; "
        f"`time_per_flop_ratio` = time ratio ÷ FLOP ratio; `attention_share` = attention layers' forward + backward ÷ step.\n\n"
        + markdown_table(table))
    print(table.to_string(index=False))


if __name__ == '__main__':
    main()
