"""Training steps with and without one competing busy process: how much a shared machine slows a run, per thread setting.

Each case runs in a child process of its own (OpenMP reads OMP_WAIT_POLICY once, when PyTorch loads): first alone,
then next to `--busy` processes that each keep one core busy (a Python loop, at the same priority). A case's slowdown
is its median step time next to the busy processes over its median step time alone. The cases:

- `torch defaults`: one OpenMP thread per core, OpenMP's default wait policy (threads spin for a while at every barrier,
  so a thread that loses its core stalls the others while they burn theirs);
- `passive`: OMP_WAIT_POLICY=PASSIVE (threads sleep at once), what twa set for every run before issue 38;
- `spin 1k` ... `spin 100k`: GOMP_SPINCOUNT, a shorter spin than the default 300,000 before sleeping;
- `twa defaults`: what `twa-train`, `make` and the notebooks do now (`twa.threads.openmp_defaults`, then
  `twa.train.use_threads`): from the cores busy at start, `spin 1k` alone, `passive` next to busy processes;
- `threads 1`: `threads=1` (`--threads 1`, `-p threads 1`), what the warning suggests on a busy machine.

    .venv/bin/python bench/load.py                      # the cpu preset's triple step on this machine's cores
    .venv/bin/python bench/load.py --preset smoke --steps 3   # seconds: checks the script
"""
import argparse, json, os, statistics, subprocess, sys, time
from pathlib import Path

CASES = {'torch defaults': dict(env={}, threads=None),
         'passive': dict(env=dict(OMP_WAIT_POLICY='PASSIVE'), threads=None),
         'spin 1k': dict(env=dict(GOMP_SPINCOUNT='1000'), threads=None),
         'spin 3k': dict(env=dict(GOMP_SPINCOUNT='3000'), threads=None),
         'spin 10k': dict(env=dict(GOMP_SPINCOUNT='10000'), threads=None),
         'spin 30k': dict(env=dict(GOMP_SPINCOUNT='30000'), threads=None),
         'spin 100k': dict(env=dict(GOMP_SPINCOUNT='100000'), threads=None),
         'twa defaults': dict(env={}, threads=None),
         'threads 1': dict(env=dict(OMP_WAIT_POLICY='PASSIVE'), threads=1)}
OMP_VARS = ('OMP_WAIT_POLICY', 'OMP_NUM_THREADS', 'GOMP_SPINCOUNT')
BUSY = "while True: pass"


def child(args):
    "Time `args.steps` training steps (after one warm-up step) in this process; print one JSON line."
    if args.case == 'twa defaults':
        from twa.threads import openmp_defaults
        openmp_defaults()                              # what twa.train does before it imports PyTorch
    policy = ' '.join(f"{k}={os.environ[k]}" for k in OMP_VARS if k in os.environ)   # as OpenMP reads them when PyTorch loads
    import torch
    from twa.config import run_config
    from twa.data import ShapesDataset, collate
    from twa.model import SlotBasedVideoModel
    from twa.train import use_threads
    from common import train_step
    threads = use_threads(args.threads, warn=False) if args.case != 'torch defaults' else torch.get_num_threads()
    run = run_config(args.attention, args.preset)
    torch.manual_seed(0)
    model = SlotBasedVideoModel(run.model)
    video = collate([ShapesDataset('train', run.model.num_frames, run.model.image_size)[i] for i in range(run.train.batch_size)])['video']
    step, times, start = train_step(model, torch.optim.AdamW(model.parameters()), video), [], time.perf_counter()
    step()
    while len(times) < args.steps and time.perf_counter() - start < args.budget:
        t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
    print(json.dumps(dict(threads=threads, policy=policy, step_s=statistics.median(times), steps=len(times))))


def measure(case: str, args, busy: int) -> dict:
    "Run `case` in a child process next to `busy` busy processes."
    spec = CASES[case]
    env = {**{k: v for k, v in os.environ.items() if k not in OMP_VARS}, **spec['env']}
    cmd = [sys.executable, __file__, '--child', '--case', case, '--attention', args.attention, '--preset', args.preset,
           '--steps', str(args.steps), '--budget', str(args.budget)] + (['--threads', str(spec['threads'])] if spec['threads'] else [])
    hogs = [subprocess.Popen([sys.executable, '-c', BUSY]) for _ in range(busy)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parent)
    finally:
        for h in hogs: h.kill(); h.wait()
    if out.returncode: raise RuntimeError(f"{case} failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]), load=os.getloadavg()[0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--attention', default='triple')
    ap.add_argument('--preset', default='cpu')
    ap.add_argument('--steps', type=int, default=5, help='timed steps per measurement (after one warm-up step)')
    ap.add_argument('--budget', type=float, default=120, help='seconds per measurement at most (fewer steps if slower)')
    ap.add_argument('--busy', type=int, default=1, help='competing busy processes')
    ap.add_argument('--cases', nargs='+', default=['torch defaults', 'passive', 'twa defaults'], choices=list(CASES))
    ap.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    ap.add_argument('--case', help=argparse.SUPPRESS)
    ap.add_argument('--threads', type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child: return child(args)
    cores = len(os.sched_getaffinity(0))
    print(f"{args.attention} at the {args.preset} preset, {cores} cores, {args.busy} competing busy process(es); "
          f"load average {os.getloadavg()[0]:.1f} before the first case (other jobs make 'alone' slower too)")
    rows = []
    for case in args.cases:
        alone, busy = measure(case, args, 0), measure(case, args, args.busy)
        rows.append((case, alone, busy))
        print(f"measured {case}: {alone['step_s']:.3f} s/step alone, {busy['step_s']:.3f} next to the busy process(es)", flush=True)
    best = min(alone['step_s'] for _, alone, _ in rows)
    torch_alone = next((alone['step_s'] for case, alone, _ in rows if case == 'torch defaults'), float('nan'))
    lines = [f"{'case':<16} {'threads':>7} {'OpenMP variables':>26} {'alone s/step':>12} {'alone / torch':>13} {'busy s/step':>11} {'slowdown':>8} {'vs best alone':>13}"]
    for case, alone, busy in rows:
        lines.append(f"{case:<16} {alone['threads']:>7} {alone['policy'] or '(none)':>26} {alone['step_s']:>12.3f} {alone['step_s'] / torch_alone:>12.2f}x "
                     f"{busy['step_s']:>11.3f} {busy['step_s'] / alone['step_s']:>7.1f}x {busy['step_s'] / best:>12.1f}x"
                     + (f"  ({busy['steps']} steps in the budget)" if busy['steps'] < args.steps else ''))
    lines.append("alone / torch: alone over torch defaults alone; slowdown: busy over alone, the same case; vs best alone: busy over the fastest "
                 "case alone (what a user waits, compared with a good setup). 'twa defaults' shows the variables twa chose when alone.")
    print('\n' + '\n'.join(lines))

if __name__ == '__main__':
    main()
