"""GPU benchmark (one script, a few minutes on one GPU): the fused Triton 2-simplicial kernel next to flash-attn,
SDPA and bf16 `torch.matmul`, and training steps of the `paper` preset per variant.

    python bench/gpu.py             # on a CUDA machine
    python bench/gpu.py --smoke     # tiny shapes anywhere (CPU: Triton's interpreter), to check the script itself

TFLOP/s are model FLOPs (DESIGN §1, `attention_flops`): forward 4·n_q·|pairs|·d per head for triple (allowed pairs
only, for the causal sliding-window row), 4·n_q·n_k·d for standard (halved when causal); forward+backward counts 3x forward. Ratios compare numbers measured in this one run.
Targets (H100/H200): triple forward >= 40% of the bf16 matmul rate; paper preset step time triple <= 2.5x standard.
"""
import argparse, json, os, sys, time

SMOKE = '--smoke' in sys.argv
if SMOKE and not os.environ.get('CUDA_VISIBLE_DEVICES') and not __import__('shutil').which('nvidia-smi'):
    os.environ.setdefault('TRITON_INTERPRET', '1')
import torch
import torch.nn.functional as F
from twa.attention import attention_flops, causal_pairs, flash_attn_func, triple_attention
from twa.config import run_config
from twa.model import SlotBasedVideoModel
from twa.variants import VARIANTS
from common import interleaved_times, median_spread, peak_memory_mb, train_step

DEV = 'cuda' if torch.cuda.is_available() else 'cpu'
DT = torch.bfloat16 if DEV == 'cuda' else torch.float32


def sync():
    if DEV == 'cuda': torch.cuda.synchronize()


def timeit(fn, reps):
    "Median seconds per call of `fn` over `reps` calls (bench/common.py, synchronising CUDA)."
    return median_spread(interleaved_times({'f': fn}, rounds=reps, sync=sync)['f'])[0]


def attention_rows(b, h, nq, n, d, reps, window=None):
    "Triple (Triton), flash-attn and SDPA at one shape: forward and forward+backward TFLOP/s; with `window`, causal (triple counted over its allowed pairs)."
    mk = lambda m: torch.randn(b, m, h, d, device=DEV, dtype=DT, requires_grad=True)
    q, k1, k2, v1, v2 = mk(nq), mk(n), mk(n), mk(n), mk(n)
    g = torch.randn(b, nq, h, d, device=DEV, dtype=DT)
    causal = window is not None
    pairs = causal_pairs(n, window) / nq if causal else None
    flops = {'triple': attention_flops('triple', b, h, nq, n, d, pairs), 'standard': attention_flops('standard', b, h, nq, n, d) / (2 if causal else 1)}
    tr = lambda t: t.transpose(1, 2)
    impls = {'triple_triton': ('triple', lambda: triple_attention(q, k1, k2, v1, v2, window=window, backend='triton')),
             'sdpa': ('standard', lambda: tr(F.scaled_dot_product_attention(tr(q), tr(k1), tr(v1), is_causal=causal)))}
    if flash_attn_func is not None and DEV == 'cuda': impls['flash_attn'] = ('standard', lambda: flash_attn_func(q, k1, v1, causal=causal))
    rows = []
    for name, (kind, f) in impls.items():
        with torch.no_grad(): fwd = timeit(f, reps)
        both = timeit(lambda: f().backward(g), reps)
        rows.append(dict(impl=name, shape=f"b{b} h{h} nq{nq} n{n} d{d}" + (f" window{window}" if causal else ''), fwd_ms=fwd * 1e3,
                         fwd_tflops=flops[kind] / fwd / 1e12, fwdbwd_ms=both * 1e3, fwdbwd_tflops=3 * flops[kind] / both / 1e12))
    return rows


def train_rows(preset, batch, steps):
    "Step time and peak memory of a few training steps of `preset` per variant (bf16 autocast on CUDA)."
    rows = []
    for variant in VARIANTS:
        cfg = run_config(variant, preset).model
        model = SlotBasedVideoModel(cfg).to(DEV)
        video = torch.rand(batch, cfg.num_frames, 3, cfg.image_size, cfg.image_size, device=DEV)
        if DEV == 'cuda': torch.cuda.reset_peak_memory_stats()
        sec = timeit(train_step(model, torch.optim.AdamW(model.parameters(), lr=1e-4), video, amp=DEV == 'cuda'), steps)
        rows.append(dict(variant=variant, step_s=sec, peak_gb=peak_memory_mb(DEV) / 1024 if DEV == 'cuda' else float('nan')))
        del model
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--smoke', action='store_true', help='tiny shapes, runs anywhere')
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args()
    if DEV != 'cuda' and not args.smoke: sys.exit("bench/gpu.py needs a CUDA GPU; use --smoke to check the script on CPU")
    reps = 2 if args.smoke else 20
    m = 256 if args.smoke else 8192
    a, b_ = torch.randn(m, m, device=DEV, dtype=DT), torch.randn(m, m, device=DEV, dtype=DT)
    matmul_tflops = 2 * m ** 3 / timeit(lambda: a @ b_, reps) / 1e12
    shapes = [(1, 2, 8, 16, 16)] if args.smoke else [(4, 8, 8, 196, 32),     # paper encoder: 8 slots over pairs of 196 tokens
                                                     (64, 8, 196, 8, 32),    # paper decoder: 196 tokens over pairs of 8 slots
                                                     (8, 8, 64, 512, 64)]    # large
    att = [r for s in shapes for r in attention_rows(*s, reps)]
    att += attention_rows(*((1, 2, 19, 19, 16) if args.smoke else (4, 8, 2048, 2048, 64)), reps, window=(5, 3) if args.smoke else (512, 32))   # Roy et al.'s windows
    train = train_rows('smoke' if args.smoke else 'paper', 2 if args.smoke else 4, 2 if args.smoke else 5)
    std = next(r['step_s'] for r in train if r['variant'] == 'standard')
    tri = next(r['step_s'] for r in train if r['variant'] == 'triple')
    summary = dict(device=torch.cuda.get_device_name() if DEV == 'cuda' else 'cpu (interpreter)', matmul_tflops=matmul_tflops,
                   triple_fwd_of_matmul=max(r['fwd_tflops'] for r in att if r['impl'] == 'triple_triton') / matmul_tflops,
                   paper_triple_step_over_standard=tri / std)
    if args.json: print(json.dumps(dict(attention=att, train=train, summary=summary))); return
    print(f"{summary['device']}: {'bf16' if DEV == 'cuda' else 'fp32'} matmul {matmul_tflops:.2f} TFLOP/s")
    for r in att: print(f"{r['impl']:<14}{r['shape']:<26} fwd {r['fwd_ms']:8.3f} ms {r['fwd_tflops']:7.2f} TFLOP/s   fwd+bwd {r['fwdbwd_ms']:8.3f} ms {r['fwdbwd_tflops']:7.2f} TFLOP/s")
    for r in train: print(f"train {r['variant']:<12} step {r['step_s'] * 1e3:9.1f} ms  peak {r['peak_gb']:.2f} GiB")
    print(f"triple forward, best shape: {summary['triple_fwd_of_matmul']:.1%} of matmul (target >= 40%)")
    print(f"paper preset step time, triple / standard: {summary['paper_triple_step_over_standard']:.2f}x (target <= 2.5x)")


if __name__ == '__main__':
    main()
