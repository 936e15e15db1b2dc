"""Where FG-ARI is lost: for trained runs, on each run's 64 test clips, how many slots the background takes, and how
many objects are split over slots or merged with another object into one slot, by the number of objects in a clip.

A pixel belongs to its slot of largest mask. An object is *split* when no slot holds 80% of its pixels, *merged*
when its main slot is also another object's main slot; a slot is a *background slot* when most of its pixels are
background. The table goes to bench/results/binding.csv and .md.

    .venv/bin/python bench/binding.py runs/standard_s0 runs/standard_s1 runs/standard_s2 runs/budget/standard_x4_s0 ...
"""
import argparse
from pathlib import Path
import pandas as pd
import torch
from twa.data import collate
from twa.metrics import contingency, fg_ari
from twa.train import load_trained, run_dataset
from common import markdown_table


def test_clips(config: dict, clips: int = 64) -> dict:
    "The first `clips` test clips of a run's data and seed (`twa.train.run_dataset`), as one batch."
    ds = run_dataset(config, 'test')
    return collate([ds[i] for i in range(min(clips, len(ds)))])


def binding(run_dir) -> pd.DataFrame:
    "One row per number of objects in a clip: clips, FG-ARI, objects split, objects merged, background slots (mean)."
    model, config = load_trained(run_dir)
    batch = test_clips(config)
    with torch.no_grad(): masks = model(batch['video'])[2]                       # [b, t, K, H, W]
    true, pred = batch['masks'], masks.argmax(2)                                   # [b, t, H, W]
    counts = contingency(true, pred, torch.ones_like(true, dtype=torch.float))    # [b, 1 + objects, K]
    objects = counts[:, 1:]
    present = objects.sum(2) > 0                                                   # [b, objects]
    share = objects / objects.sum(2, keepdim=True).clamp(min=1)
    split = ((share.amax(2) < 0.8) & present).sum(1)                              # [b]
    main = share.argmax(2)
    merged = torch.tensor([len(ids) - len(set(ids)) for ids in (main[b][present[b]].tolist() for b in range(len(main)))])
    background_slots = ((counts[:, 0] > objects.sum(1)) & (counts[:, 0] > 0)).sum(1)
    per_clip = pd.DataFrame(dict(objects=present.sum(1), fg_ari=fg_ari(true, pred), split=split, merged=merged, background_slots=background_slots))
    table = per_clip.groupby('objects').agg(clips=('fg_ari', 'size'), fg_ari=('fg_ari', 'mean'), split=('split', 'sum'),
                                            merged=('merged', 'sum'), background_slots=('background_slots', 'mean')).reset_index()
    return table.assign(run=Path(run_dir).name, steps=config['train']['steps'], num_slots=config['model']['num_slots'])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('runs', nargs='+', help='run folders')
    ap.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'binding'))
    args = ap.parse_args(argv)
    table = pd.concat([binding(r) for r in args.runs], ignore_index=True)
    table = table[['run', 'steps', 'num_slots', 'objects', 'clips', 'fg_ari', 'split', 'merged', 'background_slots']].round(3)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out + '.csv', index=False)
    Path(args.out + '.md').write_text(f"Written by `bench/binding.py {' '.join(args.runs)}`: per run and number of objects in a test clip, "
                                      "the clips, their mean FG-ARI, objects split (no slot holds 80%), objects merged (sharing their main "
                                      "slot), and the mean number of slots that are mostly background.\n\n" + markdown_table(table))
    print(table.to_string(index=False))


if __name__ == '__main__':
    main()
