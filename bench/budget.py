"""Does a longer training, or another setting, bind the slots? `standard` of the cpu preset at `--factor` times the
preset's steps, with `--set` overrides, on several seeds, read on each seed's test clips against make reports' 1x runs
and the strongest trivial baselines (both from reports/summary.csv, same seeds, same clips; empty for a seed make
reports did not run) and against issue 25's targets.

The runs are a plan of the runner (`twa.runs`): one thread each, `--jobs` at once, into runs/budget/ (a finished run is
read back, not retrained; a folder of other settings or training-path code is refused); the learning rate is the one
make reports chose for `standard` (reports/lr_sweep.csv). The table goes to bench/results/budget.csv and .md.

    .venv/bin/python bench/budget.py --factor 4 --seeds 0 1 2 --set num_slots=6
    .venv/bin/python bench/budget.py --factor 1 --set num_slots=8 --seeds 0 1 2 11 --out bench/results/slots8

The committed results were made while the preset had 6 slots (before issue 25): budget.csv's runs had 6 and its 1x
columns are make reports' 6-slot runs, as are slots8.csv's. Rerun against today's reports, they compare with 8-slot runs.
"""
import argparse, sys
from pathlib import Path
import pandas as pd
from twa.config import run_config
from twa.experiments import setting_pairs
from twa.runs import make_plan, train, read_back
from common import markdown_table

ROOT = Path(__file__).resolve().parents[1]
TARGETS = dict(fg_ari=0.85, mbo=0.70, mask_confidence=0.80, psnr_over_thumbnail=2.0)   # issue 25, point 5


def chosen_lr(variant: str = 'standard') -> float:
    "The learning rate make reports chose for `variant`."
    sweep = pd.read_csv(ROOT / 'reports' / 'lr_sweep.csv')
    return float(sweep[(sweep.variant == variant) & sweep.chosen].lr.iloc[0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--factor', type=int, default=4, help="times the cpu preset's steps")
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help="twa-train settings, e.g. num_slots=8")
    ap.add_argument('--jobs', type=int, default=2)
    ap.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'budget'))
    args = ap.parse_args(argv)
    steps, lr = args.factor * run_config('standard', 'cpu').train.steps, chosen_lr()
    settings = setting_pairs(args.set)
    name = f'standard_x{args.factor}' + ''.join(f'_{k}{v}' for k, v in settings.items())
    plan = make_plan(dict(name=f'budget/{name}_s{s}', variant='standard', preset='cpu', seed=s, lr=lr, settings={**settings, 'steps': steps})
                     for s in args.seeds)
    train(plan, ROOT / 'runs', jobs=args.jobs)
    summary = pd.read_csv(ROOT / 'reports' / 'summary.csv').set_index(['variant', 'seed'])
    rows = []
    for run in read_back(plan, ROOT / 'runs'):
        s, ev = run['seed'], run['eval']
        test = ev['test']
        base, thumb, kmeans = (summary.loc[(v, s)] if (v, s) in summary.index else pd.Series(dtype=float)
                               for v in ('standard', 'baseline_thumbnail', 'baseline_kmeans'))
        rows.append(dict(seed=s, steps=steps, lr=lr, psnr=test['psnr'], psnr_1x=base.get('psnr'), thumbnail_psnr=thumb.get('psnr'),
                         psnr_over_thumbnail=test['psnr'] - thumb.get('psnr', float('nan')), fg_ari=test['fg_ari'], fg_ari_1x=base.get('fg_ari'),
                         kmeans_fg_ari=kmeans.get('fg_ari'), mbo=test['mbo'], mbo_1x=base.get('mbo'), kmeans_mbo=kmeans.get('mbo'),
                         mask_confidence=test['mask_confidence'], wall_time_s=ev['wall_time_s']))
    table = pd.DataFrame(rows)
    mean = table.dropna().drop(columns='seed').mean().to_dict() | dict(seed='mean')     # the seeds make reports ran
    table = pd.concat([table, pd.DataFrame([mean])], ignore_index=True)
    met = {k: bool(mean[k] >= v) for k, v in TARGETS.items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out + '.csv', index=False)
    Path(args.out + '.md').write_text(
        f"# `standard` at {args.factor}x the cpu preset's steps ({steps}){''.join(f', {k} = {v}' for k, v in settings.items())}, test split\n\n"
        f"Written by `bench/budget.py {' '.join(argv if argv is not None else sys.argv[1:])}`; the 1x columns, the thumbnail and k-means are make "
        f"reports' (reports/summary.csv, the cpu preset), same seeds and clips; the mean is over the seeds make reports ran.\n\n"
        + markdown_table(table.round(3))
        + "\n\nIssue 25's targets on the mean: " + ', '.join(f"{k} >= {v}: {'met' if ok else 'missed'}" for (k, v), ok in zip(TARGETS.items(), met.values())) + '\n')
    print(table.round(3).to_string(index=False))
    print(met)


if __name__ == '__main__':
    main()
