"""Attention benchmark: time, GFLOP/s and peak extra memory of `triple` and `standard`, next to `torch.matmul`.

    python bench/attention.py            # a table
    python bench/attention.py --json     # one JSON object

Shapes follow the foundation issue: b·h = 64 (b=16, h=4), n_q = 8, n_1 = n_2 = n_k in {64, 256}, d = 64, float32.
FLOPs are the model FLOPs of DESIGN §1 (forward `4·n_q·|pairs|·d` per head for `triple`, `4·n_q·n_k·d` for
`standard`); forward+backward counts 3× forward (recomputation in the backward pass earns no credit).
Every ratio compares numbers measured in this one run, each implementation timed interleaved, round by
round, with a 1024³ `torch.matmul` (and `standard` with raw SDPA) so that machine noise hits both alike. Peak extra memory is measured in a fresh subprocess
(Linux `VmHWM` after resetting it, with glibc's mmap threshold fixed so freed buffers leave the resident set).
"""
import argparse, json, os, random, statistics, subprocess, sys, time
import torch
import torch.nn.functional as F
from twa.attention import ATTENTIONS, standard_attention, triple_attention, triple_attention_ref

B, H, NQ, D = 16, 4, 8, 64
SIZES = (64, 256)


def timeit(fns: dict, min_time=1.0, warmup=2):
    "Median seconds per call of each of `fns`, interleaved round by round (in a shuffled order) so that noise hits all alike."
    for fn in fns.values():
        for _ in range(warmup): fn()
    times, start, order = {k: [] for k in fns}, time.perf_counter(), list(fns)
    while time.perf_counter() - start < min_time * len(fns) or min(map(len, times.values())) < 5:
        random.shuffle(order)                     # no case always runs right after the cache-flushing matmul
        for k in order:
            t0 = time.perf_counter(); fns[k](); times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def inputs(n, grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, NQ, H, D, generator=g)
    kv = [torch.randn(B, n, H, D, generator=g) for _ in range(4)]
    return [t.requires_grad_(grad) for t in (q, *kv)]


def run_case(name, n, backward):
    "A zero-argument callable running one case: `name` in triple, triple_ref, standard, sdpa, standard_module."
    x = inputs(n, grad=backward)
    q, k1, k2, v1, v2 = x
    if name == 'triple': f = lambda: triple_attention(q, k1, k2, v1, v2)
    elif name == 'triple_ref': f = lambda: triple_attention_ref(q, k1, k2, v1, v2)
    elif name == 'standard':
        x = [q, k1, v1]
        f = lambda: standard_attention(q, k1, v1)
    elif name == 'sdpa':   # the raw call on the same [b, n, h, d] tensors, without the wrapper's checks and dispatch
        x = [q, k1, v1]
        f = lambda: F.scaled_dot_product_attention(q.transpose(1, 2), k1.transpose(1, 2), v1.transpose(1, 2)).transpose(1, 2)
    else: raise ValueError(name)
    if not backward:
        def forward():
            with torch.no_grad(): return f()
        return forward
    g = torch.randn(B, NQ, H, D)
    return lambda: torch.autograd.grad(f(), x, g)


def measure_memory(name, n, backward):
    "Peak resident bytes added by one call, measured in a fresh process."
    code = (f"import bench_attention_child as c; c.child({name!r}, {n}, {backward})")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', PYTHONPATH=os.path.dirname(__file__) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--json', action='store_true', help='print one JSON object instead of a table')
    ap.add_argument('--min-time', type=float, default=1.0, help='seconds of repeats per case')
    args = ap.parse_args()
    torch.manual_seed(0); random.seed(0)

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    matmul = lambda: a @ b
    impls = {'triple': 'triple', 'triple_ref': 'triple', 'standard': 'standard', 'sdpa': 'standard'}   # impl -> FLOP formula

    rows, matmul_secs = [], []
    for n in SIZES:
        fwd_flops = {'triple': 4 * B * H * NQ * n * n * D, 'standard': 4 * B * H * NQ * n * D}
        for backward in (False, True):
            for group in (['triple'], ['triple_ref'], ['standard', 'sdpa']):   # each group timed interleaved with matmul
                secs = timeit({'matmul': matmul, **{name: run_case(name, n, backward) for name in group}}, args.min_time)
                matmul_secs.append(secs.pop('matmul'))
                for name, sec in secs.items():
                    flops = fwd_flops[impls[name]] * (3 if backward else 1)
                    rows.append(dict(impl=name, n=n, pass_='fwd+bwd' if backward else 'fwd', ms=sec * 1e3, gflops=flops / sec / 1e9,
                                     of_matmul=flops / sec * matmul_secs[-1] / (2 * 1024 ** 3), peak_mb=measure_memory(name, n, backward) / 2 ** 20))
    matmul_gflops = 2 * 1024 ** 3 / statistics.median(matmul_secs) / 1e9

    def row(impl, n, p): return next(r for r in rows if r['impl'] == impl and r['n'] == n and r['pass_'] == p)
    big = max(SIZES)
    summary = {
        'matmul_gflops': matmul_gflops,
        'triple_fwd_of_matmul': row('triple', big, 'fwd')['of_matmul'],
        'triple_fwdbwd_of_matmul': row('triple', big, 'fwd+bwd')['of_matmul'],
        'triple_ref_fwd_of_matmul': row('triple_ref', big, 'fwd')['of_matmul'],
        'triple_peak_of_ref_fwd': row('triple', big, 'fwd')['peak_mb'] / row('triple_ref', big, 'fwd')['peak_mb'],
        'triple_peak_of_ref_fwdbwd': row('triple', big, 'fwd+bwd')['peak_mb'] / row('triple_ref', big, 'fwd+bwd')['peak_mb'],
        'standard_time_over_sdpa_fwd': row('standard', big, 'fwd')['ms'] / row('sdpa', big, 'fwd')['ms'],
        'standard_time_over_sdpa_fwdbwd': row('standard', big, 'fwd+bwd')['ms'] / row('sdpa', big, 'fwd+bwd')['ms'],
    }
    if args.json:
        print(json.dumps(dict(config=dict(b=B, h=H, n_q=NQ, d=D, threads=torch.get_num_threads()), rows=rows, summary=summary)))
        return
    print(f"b·h={B * H} n_q={NQ} d={D} float32, {torch.get_num_threads()} threads; torch.matmul 1024³: {matmul_gflops:.1f} GFLOP/s")
    print(f"{'impl':<11}{'n':>5} {'pass':<8}{'ms':>9}{'GFLOP/s':>9}{'of matmul':>11}{'peak MB':>9}")
    for r in rows:
        print(f"{r['impl']:<11}{r['n']:>5} {r['pass_']:<8}{r['ms']:>9.2f}{r['gflops']:>9.1f}{r['of_matmul']:>10.0%}{r['peak_mb']:>9.1f}")
    for k, v in summary.items(): print(f"{k:<32}{v:.3f}")


if __name__ == '__main__':
    main()
