"""Attention benchmark: GFLOP/s and peak extra memory of `triple` and `standard` on CPU, as fractions of `torch.matmul`.

    python bench/attention.py                 # a table
    python bench/attention.py --json          # one JSON object
    python bench/attention.py --rounds 7      # more rounds (default 5)

Standard size (issue 13, point 5): b·h = 64 (b=16, h=4), n_q = 8, n_1 = n_2 = n_k in {64, 256}, d = 64, float32.
Windowed size (issue 13, point 2): causal self-attention with window (64, 16) at n = 1024 against the full
(non-causal) call at n = 256, both b·h = 16 (b=4, h=4), n_q = n_1 = n_2 = n, d = 64, each counted over its allowed pairs.
The windowed `triple` row is `backend='auto'`: the compiled CPU kernel (`twa.cpu_kernel`) where it builds, which the
config's `window_backend` names; `triple_chunked` is the same call on the PyTorch path (`backend='chunked'`).
The row `window_gemms` times only the batched GEMMs the windowed call makes on the chunked path (the tiles of
`band_plan`, the shapes and layouts of `band_forward` and `band_backward`), credited with the windowed call's FLOPs:
the rate that path would reach if everything besides its GEMMs took no time. Its steps reuse one set of operands per
shape, which stays in cache, so it is an upper bound.
FLOPs come from `attention_flops` (DESIGN §1: forward `4·n_q·|pairs|·d` per head for `triple`, `4·n_q·n_k·d` for
`standard`); forward+backward counts 3× forward (recomputation in the backward pass earns no credit).

Every ratio compares numbers measured together: each group of cases is timed interleaved with a 1024³
`torch.matmul` (shuffled order, so that machine noise hits all alike); a round times every group in turn, and the
table gives the median over rounds and the spread (lowest to highest). Peak extra memory is measured once per
standard-size case in a fresh subprocess (Linux `VmHWM` after resetting it, with glibc's mmap threshold fixed so freed
buffers leave the resident set).
"""
import argparse, json, os, random, statistics, subprocess, sys, time
import torch
from common import interleaved_times, median_spread
import torch.nn.functional as F
from twa.attention import attention_flops, causal_pairs, pick_backend, standard_attention, triple_attention, triple_attention_ref
from twa.windowed import band_plan, band_steps

SIZES = (64, 256)                                                  # n_k of the standard size
WINDOWED = dict(b=4, h=4, nq=1024, n=1024, d=64, window=(64, 16))
FULL = dict(b=4, h=4, nq=256, n=256, d=64, window=None)
MATMUL_FLOPS = 2 * 1024 ** 3


def standard_size(n): return dict(b=16, h=4, nq=8, n=n, d=64, window=None)


def timeit(fns: dict, min_time=0.5, warmup=2):
    "Median seconds per call of each of `fns`, interleaved round by round (bench/common.py)."
    return {k: statistics.median(v) for k, v in interleaved_times(fns, rounds=5, min_time=min_time, warmup=warmup).items()}


def band_gemms(shape, backward):
    "A callable making only the GEMMs of a windowed call on the chunked path (2 per step forward, 6 more backward), and that call's forward FLOPs."
    b, h, n, d, window = (shape[k] for k in ('b', 'h', 'n', 'd', 'window'))
    band, g = band_plan(b * h, 1, n, sorted(window)), torch.Generator().manual_seed(0)
    operands = {}
    def step_operands(Bp, M, Cp):                     # M = c·rr rows, Cp = c + C - 1 columns; one set per distinct shape
        if (Bp, M, Cp) not in operands:
            r = lambda *s: torch.randn(*s, generator=g)
            operands[Bp, M, Cp] = dict(qk1=r(Bp, M, d + 1), k2=r(Bp, Cp, d + 1), v2=r(Bp, Cp, d), p=r(Bp, M, Cp), dov1=r(Bp, M, d),
                                       s=torch.empty(Bp, M, Cp), rows=torch.empty(Bp, M, d), cols=torch.empty(Bp, Cp, d))
        return operands[Bp, M, Cp]
    steps = [step_operands(len(range(b * h)[hb]), c * rr, c + band.C - 1) for hb, i0, c, r0, rr in band_steps(band, b * h, n)]
    def run():
        for o in steps:
            torch.bmm(o['qk1'], o['k2'].transpose(1, 2), out=o['s'])              # the logits
            torch.bmm(o['p'], o['v2'], out=o['rows'])                             # P @ V2
            if backward:                                                          # recomputed logits, dP, P @ V2, dV2, dS @ K2, dK2
                torch.bmm(o['qk1'], o['k2'].transpose(1, 2), out=o['s'])
                torch.bmm(o['dov1'], o['v2'].transpose(1, 2), out=o['s'])
                torch.bmm(o['p'], o['v2'], out=o['rows'])
                torch.bmm(o['p'].transpose(1, 2), o['dov1'], out=o['cols'])
                torch.bmm(o['p'], o['k2'][..., :d], out=o['rows'])
                torch.bmm(o['p'].transpose(1, 2), o['qk1'][..., :d], out=o['cols'])
    return run, attention_flops('triple', b, h, n, n, d, causal_pairs(n, window) / n)


def run_case(impl, shape, backward):
    "A zero-argument callable running `impl` (triple, triple_chunked, triple_ref, standard, sdpa, window_gemms) at `shape`, and its forward FLOPs."
    if impl == 'window_gemms': return band_gemms(shape, backward)
    b, h, nq, n, d, window = (shape[k] for k in ('b', 'h', 'nq', 'n', 'd', 'window'))
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(b, m, h, d, generator=g).requires_grad_(backward) for m in (nq, n, n, n, n)]
    q, k1, k2, v1, v2 = x
    pairs = None if window is None else causal_pairs(n, window) / nq
    tr = lambda t: t.transpose(1, 2)
    f, flops = {'triple': (lambda: triple_attention(q, k1, k2, v1, v2, window=window), attention_flops('triple', b, h, nq, n, d, pairs)),
                'triple_chunked': (lambda: triple_attention(q, k1, k2, v1, v2, window=window, backend='chunked'), attention_flops('triple', b, h, nq, n, d, pairs)),
                'triple_ref': (lambda: triple_attention_ref(q, k1, k2, v1, v2), attention_flops('triple', b, h, nq, n, d)),
                'standard': (lambda: standard_attention(q, k1, v1), attention_flops('standard', b, h, nq, n, d)),
                # the raw call on the same [b, n, h, d] tensors, without the wrapper's checks and dispatch
                'sdpa': (lambda: tr(F.scaled_dot_product_attention(tr(q), tr(k1), tr(v1))), attention_flops('standard', b, h, nq, n, d))}[impl]
    if impl in ('standard', 'sdpa'): x = [q, k1, v1]
    if not backward:
        def forward():
            with torch.no_grad(): return f()
        return forward, flops
    grad = torch.randn(b, nq, h, d, generator=g)
    return (lambda: torch.autograd.grad(f(), x, grad)), flops


def measure_memory(impl, shape, backward):
    "Peak resident bytes added by one call, measured in a fresh process."
    code = f"import bench_attention_child as c; c.child({impl!r}, {shape!r}, {backward})"
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', PYTHONPATH=os.path.dirname(__file__) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def groups():
    "The groups of cases, each timed interleaved with the matmul: `(label, shape, backward, impls)`."
    for n in SIZES:
        for backward in (False, True):
            for impls in (['triple'], ['triple_ref'], ['standard', 'sdpa']): yield f"n_k={n}", standard_size(n), backward, impls
    for backward in (False, True):
        yield "window", WINDOWED, backward, ['triple', 'window_gemms']
        yield "window", WINDOWED, backward, ['triple_chunked']   # a group of its own: the `triple` row is timed with the same company as before
        yield "full", FULL, backward, ['triple']


def measure(rounds, min_time):
    "Rows per (case, pass): GFLOP/s and fraction of matmul for each round, and the matmul GFLOP/s of each group."
    rows, matmul = {}, []
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(rounds):
        for label, shape, backward, impls in groups():
            cases = {impl: run_case(impl, shape, backward) for impl in impls}
            secs = timeit({'matmul': lambda: a @ b, **{k: f for k, (f, _) in cases.items()}}, min_time)
            mm = MATMUL_FLOPS / secs.pop('matmul')
            matmul.append(mm / 1e9)
            for impl, (_, flops) in cases.items():
                r = rows.setdefault((impl, label, 'fwd+bwd' if backward else 'fwd'), dict(gflops=[], of_matmul=[]))
                rate = flops * (3 if backward else 1) / secs[impl]
                r['gflops'].append(rate / 1e9); r['of_matmul'].append(rate / mm)
    return rows, matmul


def spread(v): return dict(zip(('median', 'low', 'high'), median_spread(v)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--json', action='store_true', help='print one JSON object instead of a table')
    ap.add_argument('--rounds', type=int, default=5, help='rounds over all cases (medians and spreads are over rounds)')
    ap.add_argument('--min-time', type=float, default=0.5, help='seconds of repeats per case and round')
    args = ap.parse_args()
    torch.manual_seed(0); random.seed(0)
    rows, matmul = measure(args.rounds, args.min_time)
    big = f"n_k={max(SIZES)}"
    mem = {(impl, p): measure_memory(impl, standard_size(max(SIZES)), p == 'fwd+bwd') / 2 ** 20
           for impl in ('triple', 'triple_ref') for p in ('fwd', 'fwd+bwd')}
    per_round = lambda a, b, key='of_matmul': [x / y for x, y in zip(rows[a][key], rows[b][key])]
    summary = {
        'matmul_gflops': spread(matmul),
        'triple_fwd_of_matmul': spread(rows['triple', big, 'fwd']['of_matmul']),
        'triple_fwdbwd_of_matmul': spread(rows['triple', big, 'fwd+bwd']['of_matmul']),
        'triple_ref_fwd_of_matmul': spread(rows['triple_ref', big, 'fwd']['of_matmul']),
        'windowed_over_full_fwd': spread(per_round(('triple', 'window', 'fwd'), ('triple', 'full', 'fwd'))),
        'windowed_over_full_fwdbwd': spread(per_round(('triple', 'window', 'fwd+bwd'), ('triple', 'full', 'fwd+bwd'))),
        'windowed_chunked_over_full_fwd': spread(per_round(('triple_chunked', 'window', 'fwd'), ('triple', 'full', 'fwd'))),
        'windowed_chunked_over_full_fwdbwd': spread(per_round(('triple_chunked', 'window', 'fwd+bwd'), ('triple', 'full', 'fwd+bwd'))),
        'window_gemms_over_full_fwd': spread(per_round(('window_gemms', 'window', 'fwd'), ('triple', 'full', 'fwd'))),
        'window_gemms_over_full_fwdbwd': spread(per_round(('window_gemms', 'window', 'fwd+bwd'), ('triple', 'full', 'fwd+bwd'))),
        'standard_time_over_sdpa_fwd': spread(per_round(('sdpa', big, 'fwd'), ('standard', big, 'fwd'), 'gflops')),
        'standard_time_over_sdpa_fwdbwd': spread(per_round(('sdpa', big, 'fwd+bwd'), ('standard', big, 'fwd+bwd'), 'gflops')),
        'triple_peak_of_ref_fwd': mem['triple', 'fwd'] / mem['triple_ref', 'fwd'],
        'triple_peak_of_ref_fwdbwd': mem['triple', 'fwd+bwd'] / mem['triple_ref', 'fwd+bwd'],
    }
    config = dict(threads=torch.get_num_threads(), rounds=args.rounds, standard=standard_size(max(SIZES)), windowed=WINDOWED, full=FULL,
                  window_backend=pick_backend('auto', torch.empty(0), 'keys', WINDOWED['window']), load=os.getloadavg())
    if args.json:
        print(json.dumps(dict(config=config, rows=[dict(impl=k[0], case=k[1], pass_=k[2], **v) for k, v in rows.items()], summary=summary)))
        return
    print(f"float32, {torch.get_num_threads()} threads, {args.rounds} rounds, load {config['load'][0]:.2f}, windowed backend {config['window_backend']}; "
          f"torch.matmul 1024³: {summary['matmul_gflops']['median']:.1f} GFLOP/s (median over groups)")
    print(f"{'impl':<16}{'case':<8}{'pass':<9}{'GFLOP/s':>9}{'of matmul':>11}  spread")
    for (impl, label, p), v in rows.items():
        f = v['of_matmul']
        print(f"{impl:<16}{label:<8}{p:<9}{statistics.median(v['gflops']):>9.1f}{statistics.median(f):>10.0%}   {min(f):.0%}-{max(f):.0%}")
    for k, v in summary.items():
        print(f"{k:<32}" + (f"{v['median']:.3f}  ({v['low']:.3f}-{v['high']:.3f})" if isinstance(v, dict) else f"{v:.3f}"))


if __name__ == '__main__':
    main()
