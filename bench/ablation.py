"""Ablation of the cpu preset's model at equal wall time: which levers make the slot model learn.

Each row changes one setting of the `cpu` preset (variant `standard`), measures its step time in this process,
trains it with the real `Trainer` for as many steps as fit in `--budget` seconds (with the preset's recipe: warmup
and cosine decay over those steps), and reports validation PSNR and FG-ARI. Rows run one after another on the same
machine, so their wall times are comparable; the table goes to bench/results/ablation.csv and .md.

    .venv/bin/python bench/ablation.py --budget 150
"""
import argparse, json, tempfile
from pathlib import Path
import pandas as pd
import torch
from twa.config import run_config
from twa.data import ShapesDataset, collate
from twa.model import SlotBasedVideoModel
from twa.train import Trainer
from common import interleaved_times, median_spread, train_step

ROWS = {                                           # name -> (what changes, model overrides)
    'cpu preset': ('the chosen model', {}),
    'no competition': ('softmax over tokens instead of over slots (plain cross-attention)', dict(competition=False)),
    'no map prior': ('masks from the slot vectors alone (a plain spatial-broadcast decoder)', dict(map_prior=False)),
    'patch 4': ('8 x 8 tokens of 4 x 4 pixels instead of 16 x 16 of 2 x 2', dict(patch_size=4)),
    'no temporal carry': ('every frame starts from the learned slots', dict(temporal_carry=False)),
}

def step_time(overrides: dict, steps: int = 8) -> float:
    "Median seconds per training step of the cpu preset with `overrides` (bench/common.py)."
    run = run_config('standard', 'cpu', **overrides)
    model = SlotBasedVideoModel(run.model)
    video = collate([ShapesDataset('train', run.model.num_frames, run.model.image_size)[i] for i in range(run.train.batch_size)])['video']
    return median_spread(interleaved_times({'step': train_step(model, torch.optim.AdamW(model.parameters()), video)}, rounds=steps)['step'])[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--budget', type=float, default=150, help='training seconds per row')
    ap.add_argument('--rows', nargs='*', default=list(ROWS), choices=list(ROWS))
    ap.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'ablation'))
    args = ap.parse_args(argv)
    results, root = [], Path(tempfile.mkdtemp())
    for name in args.rows:
        what, overrides = ROWS[name]
        dt = step_time(overrides)
        steps = max(10, int(args.budget / dt))
        run = run_config('standard', 'cpu', steps=steps, eval_every=steps, run_dir=str(root / name.replace(' ', '_')), **overrides)
        ev = Trainer(run, progress='log').fit()
        val = pd.read_parquet(Path(run.train.run_dir) / 'metrics.parquet').iloc[-1]
        results.append(dict(row=name, change=what, step_time_s=round(dt, 4), steps=steps, train_time_s=round(ev['wall_time_s'], 1),
                            val_psnr=round(val.val_psnr, 2), val_fg_ari=round(val.val_fg_ari, 3), val_mbo=round(val.val_mbo, 3)))
        print(json.dumps(results[-1]), flush=True)
    table = pd.DataFrame(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out + '.csv', index=False)
    rows = ['| ' + ' | '.join(map(str, r)) + ' |' for r in table.itertuples(index=False)]
    Path(args.out + '.md').write_text(f"Ablation at {args.budget:.0f} s of training per row ({torch.get_num_threads()} threads); "
                                      f"validation metrics on 32 clips.\n\n| {' | '.join(table.columns)} |\n|{'---|' * len(table.columns)}\n"
                                      + '\n'.join(rows) + '\n')
    print(table.to_string(index=False))

if __name__ == '__main__': main()
