"""Data benchmark: clips/s of each source at the `cpu` preset (64x64, 8 frames), next to a training step.

    python bench/data.py            # a table
    python bench/data.py --json     # one JSON object
    python bench/data.py --shard-gb 1.0   # size of the synthetic OpenVid-1k shard streamed for the memory figure

Everything is measured in one run on one core (torch.set_num_threads(1)) except the training step, which uses
the machine's threads as training does. Files are synthetic (written here, same schema as the real data).
The memory figure is the peak resident memory a fresh process adds while streaming every row of the shard.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch

from twa.data import ShapesDataset, OpenVidDataset, VideoFolderDataset, write_openvid_parquet, collate
from twa.model import SlotBasedVideoModel, model_config

T, SIZE = 8, 64


def clips_per_s(ds, n):
    t0 = time.perf_counter()
    for i in range(n): ds[i % len(ds)]
    return n / (time.perf_counter() - t0)


def write_shard(path, rows, row_group_size, seed=0):
    "An OpenVid-1k-like shard: rows of 16x3x224x224 float32 frames in [0, 1] (about 9.6 MB each), written a row group at a time."
    import pyarrow.parquet as pq
    from twa.data import frames_array
    import pyarrow as pa
    rng = np.random.default_rng(seed)
    with pq.ParquetWriter(path, pa.schema([('frames', frames_array([np.zeros((1, 1, 1, 1))]).type), ('caption', pa.string())])) as w:
        for start in range(0, rows, row_group_size):
            n = min(row_group_size, rows - start)
            vids = [rng.random((16, 3, 224, 224), dtype=np.float32) for _ in range(n)]
            w.write_table(pa.table({'frames': frames_array(vids), 'caption': [f'clip {start + i}' for i in range(n)]}))


STREAM = """
import sys
from twa.data import OpenVidDataset
def status(field):
    with open('/proc/self/status') as f: return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ':'))
ds = OpenVidDataset(sys.argv[1], 'train', 8, 64)
base = status('VmRSS')
with open('/proc/self/clear_refs', 'w') as f: f.write('5')          # reset the peak (VmHWM) to the current RSS
for i in range(len(ds)): ds[i]
print(len(ds), status('VmHWM') - base)
"""

def stream_memory(shard_dir):
    "Peak resident bytes that streaming every train row of the shard adds, in a fresh process (Linux VmHWM, reset first)."
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')         # freed buffers leave the resident set
    out = subprocess.run([sys.executable, '-c', STREAM, str(shard_dir)], capture_output=True, text=True, check=True, env=env).stdout.split()
    return int(out[0]), int(out[1])


def write_videos(folder, n=10, frames=48, size=128):
    import av
    rng = np.random.default_rng(0)
    for g in range(n):
        with av.open(str(folder / f'v{g:02d}.mp4'), 'w') as c:
            s = c.add_stream('libx264', rate=24); s.height = s.width = size; s.pix_fmt = 'yuv420p'
            for _ in range(frames):
                for p in s.encode(av.VideoFrame.from_ndarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), format='rgb24')): c.mux(p)
            for p in s.encode(): c.mux(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--json', action='store_true')
    ap.add_argument('--shard-gb', type=float, default=1.0)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    res = {}

    # a training step of the cpu preset (standard attention, batch 8), at full threads
    model = SlotBasedVideoModel(model_config('cpu'))
    opt = torch.optim.AdamW(model.parameters())
    video = collate([ShapesDataset('train', T, SIZE)[i] for i in range(8)])['video']
    for i in range(4):
        if i == 1: t0 = time.perf_counter()
        loss = (model(video)[0] - video).square().mean(); opt.zero_grad(); loss.backward(); opt.step()
    res['train_clips_per_s'] = 8 * 3 / (time.perf_counter() - t0)

    torch.set_num_threads(1)
    res['shapes_clips_per_s'] = clips_per_s(ShapesDataset('train', T, SIZE), 2000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = tmp / 'small'; small.mkdir()
        write_shard(small / 'train-00000.parquet', rows=24, row_group_size=4)
        ov = OpenVidDataset(small, 'train', T, SIZE)
        res['openvid_clips_per_s'] = clips_per_s(ov, len(ov))
        vids = tmp / 'videos'; vids.mkdir()
        write_videos(vids)
        vd = VideoFolderDataset(vids, 'train', T, SIZE)
        res['videos_clips_per_s'] = clips_per_s(vd, 4 * len(vd))
        big = tmp / 'big'; big.mkdir()
        rows = max(1, round(args.shard_gb * 2 ** 30 / (16 * 3 * 224 * 224 * 4)))
        write_shard(big / 'train-00000.parquet', rows=rows, row_group_size=4)
        res['shard_mb'] = (big / 'train-00000.parquet').stat().st_size / 2 ** 20
        res['shard_rows_streamed'], peak = stream_memory(big)
        res['stream_peak_extra_mb'] = peak / 2 ** 20
    res['shapes_over_training'] = res['shapes_clips_per_s'] / res['train_clips_per_s']

    if args.json: print(json.dumps(res)); return
    print(f"cpu preset: {T} frames of {SIZE}x{SIZE}; sources on 1 thread, training step on {threads}")
    for k, v in res.items(): print(f"{k:<24}{v:>10.1f}")


if __name__ == '__main__':
    main()
