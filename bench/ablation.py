"""Ablation of the cpu preset's model at equal wall time: which levers make the slot model learn.

Each row changes one setting of the `cpu` preset (variant `standard`), measures its step time in this process,
trains it with the real `Trainer` for as many steps as fit in `--budget` seconds (with the preset's recipe: warmup
and cosine decay over those steps), and reports validation PSNR, FG-ARI, mBO and mask confidence. Rows run one after another on the same
machine, so their wall times are comparable; the table goes to bench/results/ablation.csv and .md.

    .venv/bin/python bench/ablation.py --budget 150
"""
import argparse, json, os, tempfile
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')   # before PyTorch loads OpenMP, as bench/train_step.py (bench/load.py)
from pathlib import Path
import pandas as pd
import torch
from twa.config import run_config
from twa.data import ShapesDataset, collate
from twa.model import SlotBasedVideoModel
from twa.train import Trainer
from common import interleaved_times, markdown_table, median_spread, train_step

ROWS = {                                           # name -> (what changes, model overrides)
    'cpu preset': ('the chosen model', {}),
    '6 slots': ('6 slots instead of 8 (the preset before issue 25)', dict(num_slots=6)),
    'no mask noise': ('no noise on the mask logits while training', dict(mask_noise=0.0)),
    'mask noise 2': ('twice the noise on the mask logits', dict(mask_noise=2.0)),
    'no affinity': ('masks from the slot vectors alone (a plain spatial-broadcast decoder)', dict(affinity_masks=False)),
    'no competition': ('softmax over tokens instead of over slots (plain cross-attention)', dict(competition=False)),
    'no temporal carry': ('every frame starts from the learned slots', dict(temporal_carry=False)),
    'decoder patch 2': ('the decoder MLP renders 2 x 2-pixel cells instead of 4 x 4', dict(decoder_patch=2)),
    'constant mask noise': ('the mask noise stays at full strength to the last step (no annealing)', dict(mask_noise_anneal=1.0)),
    'decoder hidden 128': ('a decoder MLP twice as wide (128 instead of 64)', dict(decoder_hidden=128)),
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
                            val_psnr=round(val.val_psnr, 2), val_fg_ari=round(val.val_fg_ari, 3), val_mbo=round(val.val_mbo, 3),
                            val_mask_confidence=round(val.val_mask_confidence, 3), val_max_mask=round(val.val_max_mask, 3)))
        print(json.dumps(results[-1]), flush=True)
    table = pd.DataFrame(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out + '.csv', index=False)
    Path(args.out + '.md').write_text(f"Ablation at {args.budget:.0f} s of training per row ({torch.get_num_threads()} threads); "
                                      f"validation metrics on 32 clips.\n\n" + markdown_table(table))
    print(table.to_string(index=False))

if __name__ == '__main__': main()
