"""Data benchmark: clips/s of each source per core and through DataLoader workers, and the cores a GPU run needs.

    python bench/data.py                  # tables
    python bench/data.py --json           # one JSON object
    python bench/data.py --step-time 0.071 --batch-size 64   # cores the paper preset needs at that step time
    python bench/data.py --shard-gb 1.0   # size of the synthetic OpenVid-1k shard streamed for the memory figure

cpu preset (8 frames of 64x64): shapes, OpenVid source shards and videos on one core, next to a training step of
the cpu preset on all threads.
paper preset (16 frames of 224x224): the OpenVid source shards, the folder `prepare_openvid` makes from them, and
the other storage formats considered for it, on one core (torch.set_num_threads(1), as in a DataLoader worker),
median of 5 passes; then the prepared folder through a DataLoader with 0, 1, 2 and all workers (clips/s, peak
resident memory of each worker), and the cores the paper preset needs at --step-time seconds per step of
--batch-size clips (the default, 0.071 s for 64 clips = 900 clips/s, is an H200 at about 35% of its bf16 peak on
the preset's 307 GFLOP per clip).
memory: the peak resident memory a fresh process adds while streaming every row of a large source shard.

Files are synthetic (written here, same schema as the real data; the paper-preset clips are procedural shapes, which
compress far better than real video, so the compressed sizes are optimistic). Reads come from the page cache.
"""
import argparse, json, math, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch

from twa.data import (ShapesDataset, OpenVidDataset, VideoFolderDataset, write_openvid_parquet, frames_array, collate,
                      prepare_openvid)
from twa.config import run_config
from twa.model import SlotBasedVideoModel
from common import interleaved_times, median_spread, train_step

CPU = run_config('standard', 'cpu').model
T, SIZE = CPU.num_frames, CPU.image_size      # cpu preset clips
PT, PSIZE = 16, 224             # paper preset clips


def clips_per_s(ds, n):
    t0 = time.perf_counter()
    for i in range(n): ds[i % len(ds)]
    return n / (time.perf_counter() - t0)


def median_rate(read, n, reps=5):
    "Median over `reps` passes of clips/s of `read(i)` for i < n (bench/common.py)."
    return n / median_spread(interleaved_times({'pass': lambda: [read(i) for i in range(n)]}, rounds=reps, warmup=0)['pass'])[0]


def write_shard(path, rows, row_group_size, seed=0):
    "An OpenVid-1k-like shard: rows of 16x3x224x224 float32 frames in [0, 1] (about 9.6 MB each), written a row group at a time."
    import pyarrow as pa, pyarrow.parquet as pq
    rng = np.random.default_rng(seed)
    with pq.ParquetWriter(path, pa.schema([('frames', frames_array([np.zeros((1, 1, 1, 1))]).type), ('caption', pa.string())])) as w:
        for start in range(0, rows, row_group_size):
            n = min(row_group_size, rows - start)
            vids = [rng.random((PT, 3, PSIZE, PSIZE), dtype=np.float32) for _ in range(n)]
            w.write_table(pa.table({'frames': frames_array(vids), 'caption': [f'clip {start + i}' for i in range(n)]}))


STREAM = """
import sys
from twa.data import OpenVidDataset
def status(field):
    with open('/proc/self/status') as f: return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ':'))
ds = OpenVidDataset(sys.argv[1], 'train', int(sys.argv[2]), int(sys.argv[3]))
base = status('VmRSS')
with open('/proc/self/clear_refs', 'w') as f: f.write('5')          # reset the peak (VmHWM) to the current RSS
for i in range(len(ds)): ds[i]
print(len(ds), status('VmHWM') - base)
"""

def stream_memory(shard_dir, frames=T, size=SIZE):
    "Peak resident bytes that streaming every train row of an OpenVid folder adds, in a fresh process (Linux VmHWM, reset first)."
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')         # freed buffers leave the resident set
    out = subprocess.run([sys.executable, '-c', STREAM, str(shard_dir), str(frames), str(size)], capture_output=True, text=True, check=True, env=env).stdout.split()
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


def cpu_preset(res, tmp, shard_gb):
    "Sources at the cpu preset on one core, a cpu-preset training step on all threads, and the source reader's memory."
    threads = torch.get_num_threads()
    model = SlotBasedVideoModel(CPU)
    video = collate([ShapesDataset('train', T, SIZE)[i] for i in range(8)])['video']
    step = median_spread(interleaved_times({'step': train_step(model, torch.optim.AdamW(model.parameters()), video)}, rounds=3, warmup=1)['step'])[0]
    res['train_clips_per_s'] = 8 / step
    torch.set_num_threads(1)
    res['shapes_clips_per_s'] = clips_per_s(ShapesDataset('train', T, SIZE), 2000)
    small = tmp / 'small'; small.mkdir()
    write_shard(small / 'train-00000.parquet', rows=24, row_group_size=4)
    ov = OpenVidDataset(small, 'train', T, SIZE)
    res['openvid_clips_per_s'] = clips_per_s(ov, len(ov))
    vids = tmp / 'videos'; vids.mkdir()
    write_videos(vids)
    vd = VideoFolderDataset(vids, 'train', T, SIZE)
    res['videos_clips_per_s'] = clips_per_s(vd, 4 * len(vd))
    big = tmp / 'big'; big.mkdir()
    write_shard(big / 'train-00000.parquet', rows=max(1, round(shard_gb * 2 ** 30 / (PT * 3 * PSIZE * PSIZE * 4))), row_group_size=4)
    res['shard_mb'] = (big / 'train-00000.parquet').stat().st_size / 2 ** 20
    res['shard_rows_streamed'], peak = stream_memory(big)
    res['stream_peak_extra_mb'] = peak / 2 ** 20
    res['shapes_over_training'] = res['shapes_clips_per_s'] / res['train_clips_per_s']
    torch.set_num_threads(threads)


def write_paper_shards(folder, rows, per_shard=8):
    "OpenVid-1k-like source shards of 16x3x224x224 procedural clips (float32, row groups of 2)."
    ds = ShapesDataset('train', PT, PSIZE)
    folder.mkdir()
    for s in range(0, rows, per_shard):
        write_openvid_parquet(folder / f'train-{s // per_shard:05d}.parquet', [ds[g]['video'].numpy() for g in range(s, min(rows, s + per_shard))],
                              [f'clip {g}' for g in range(s, min(rows, s + per_shard))], row_group_size=2)


def to_float(u8):
    return torch.from_numpy(np.divide(u8, np.float32(255), dtype=np.float32))   # as to_video does: numpy, one thread


def other_formats(clips, tmp):
    "Readers of the formats considered and not chosen, holding `clips` (uint8 [16, 3, 224, 224] each): name -> (read(i), bytes)."
    import pyarrow as pa, pyarrow.parquet as pq
    flat = pa.ListArray.from_arrays(pa.array(np.arange(len(clips) + 1) * clips[0].size, pa.int32()), pa.array(np.stack(clips).ravel()))
    readers = {}
    for comp in ('none', 'zstd'):
        path = tmp / f'uint8_{comp}.parquet'
        pq.write_table(pa.table({'frames': flat}), path, row_group_size=4, compression=comp)
        pf, held = pq.ParquetFile(path), {}
        def read(i, pf=pf, held=held):
            if held.get('rg') != i // 4: held.update(rg=i // 4, table=pf.read_row_group(i // 4))
            return to_float(held['table'].column('frames')[i % 4].values.to_numpy().reshape(PT, 3, PSIZE, PSIZE))
        readers[f'parquet, uint8 lists, {comp}, row groups of 4'] = (read, path.stat().st_size)
    path = tmp / 'clips.npy'
    np.save(path, np.stack(clips))
    mm = np.load(path, mmap_mode='r')
    readers['numpy .npy uint8, memory-mapped'] = (lambda i: to_float(mm[i]), path.stat().st_size)
    return readers


def children():
    "Process ids of this process's children (Linux /proc)."
    return [int(p) for t in Path('/proc/self/task').iterdir() for p in (t / 'children').read_text().split()]


def peak_rss_mb(pid):
    with open(f'/proc/{pid}/status') as f: return next(int(l.split()[1]) / 1024 for l in f if l.startswith('VmHWM:'))


def loader_rate(ds, workers, batch=16, batches=30, warm=3):
    "clips/s of a DataLoader over `ds` (random order, persistent workers, prefetch 4), and each worker's peak RSS in MB."
    n = batch * (batches + warm + 4 * max(workers, 1))                # prefetched batches are still outstanding at the end
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=torch.utils.data.RandomSampler(ds, replacement=True, num_samples=n),
                                     collate_fn=collate, num_workers=workers, pin_memory=torch.cuda.is_available(),
                                     persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
    it = iter(dl)
    for _ in range(warm): next(it)                                    # workers started and busy
    t0 = time.perf_counter()
    for _ in range(batches): next(it)
    rate = batches * batch / (time.perf_counter() - t0)
    rss = [peak_rss_mb(pid) for pid in children()] if workers else []
    del it, dl
    return rate, rss


def paper_preset(res, tmp, step_time, batch_size):
    "OpenVid at 16x3x224x224: source vs prepared and the other formats on one core; DataLoader scaling; cores needed."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    src = tmp / 'paper_src'
    write_paper_shards(src, rows=24)
    fmt = res['formats'] = {}
    source = OpenVidDataset(src, 'train', PT, PSIZE)
    fmt['parquet, nested float32 lists (the source)'] = dict(clips_per_s=median_rate(lambda i: source[i], len(source)),
                                                             mb_per_clip=sum(f.stat().st_size for f in src.iterdir()) / 24 / 2 ** 20)
    for comp in (None, 'zstd', 'lz4'):
        t0 = time.perf_counter()
        m = prepare_openvid(src, tmp / f'prepared_{comp}', PSIZE, compression=comp, progress=False)
        if comp is None: res['prepare_clips_per_s'] = m['rows'] / (time.perf_counter() - t0)
        ds, ds8 = (OpenVidDataset(tmp / f'prepared_{comp}', 'train', PT, PSIZE, uint8=u) for u in (False, True))
        name = f"Arrow IPC, uint8, {comp or 'uncompressed'} (prepare_openvid{'' if comp is None else f', compression={comp!r}'})"
        fmt[name] = dict(clips_per_s=median_rate(lambda i: ds[i], len(ds)), uint8_clips_per_s=median_rate(lambda i: ds8[i], len(ds8)),
                         mb_per_clip=sum(e['bytes'] for e in m['shards']) / m['rows'] / 2 ** 20)
    prepared = OpenVidDataset(tmp / 'prepared_None', 'train', PT, PSIZE)
    clips = [OpenVidDataset(tmp / 'prepared_None', 'train', PT, PSIZE, uint8=True)[i]['video'].numpy() for i in range(len(prepared))]
    for name, (read, size) in other_formats(clips, tmp).items():
        fmt[name] = dict(clips_per_s=median_rate(read, len(clips)), mb_per_clip=size / len(clips) / 2 ** 20)
    res['source_clips_per_s'] = fmt['parquet, nested float32 lists (the source)']['clips_per_s']
    res['prepared_clips_per_s'] = fmt['Arrow IPC, uint8, uncompressed (prepare_openvid)']['clips_per_s']
    res['prepared_uint8_clips_per_s'] = fmt['Arrow IPC, uint8, uncompressed (prepare_openvid)']['uint8_clips_per_s']
    res['prepared_stream_peak_extra_mb'] = stream_memory(tmp / 'prepared_None', PT, PSIZE)[1] / 2 ** 20

    res['loader'] = {}
    for workers in sorted({0, 1, 2, os.cpu_count()}):
        for uint8 in (False, True):
            rate, rss = loader_rate(OpenVidDataset(tmp / 'prepared_None', 'train', PT, PSIZE, uint8=uint8), workers)
            res['loader'][f"{workers} workers, {'uint8' if uint8 else 'float'}"] = dict(clips_per_s=rate, worker_peak_rss_mb=rss)
    torch.set_num_threads(threads)

    need = batch_size / step_time
    per_worker = res['loader']['1 workers, float']['clips_per_s']
    res['paper'] = dict(step_time=step_time, batch_size=batch_size, clips_per_s_needed=need,
                        cores_prepared=math.ceil(need / per_worker), cores_prepared_uint8=math.ceil(need / res['loader']['1 workers, uint8']['clips_per_s']),
                        cores_source=math.ceil(need / res['source_clips_per_s']))


def report(res):
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end (other work on the machine slows every figure)")
    print(f"\ncpu preset: {T} frames of {SIZE}x{SIZE}; sources on 1 thread, training step on {torch.get_num_threads()}")
    for k in ('train_clips_per_s', 'shapes_clips_per_s', 'openvid_clips_per_s', 'videos_clips_per_s', 'shapes_over_training',
              'shard_mb', 'shard_rows_streamed', 'stream_peak_extra_mb'):
        print(f"  {k:<28}{res[k]:>10.1f}")
    print(f"\npaper preset: clips of {PT}x3x{PSIZE}x{PSIZE} to float tensors on one core, median of 5 passes")
    print(f"  {'format':<66}{'clips/s':>9}{'uint8':>9}{'MB/clip':>9}")
    for name, r in res['formats'].items():
        u8 = f"{r['uint8_clips_per_s']:>9.0f}" if 'uint8_clips_per_s' in r else ' ' * 9
        print(f"  {name:<66}{r['clips_per_s']:>9.1f}{u8}{r['mb_per_clip']:>9.2f}")
    print(f"  prepare_openvid converts {res['prepare_clips_per_s']:.1f} clips/s (one process); streaming every prepared row adds "
          f"{res['prepared_stream_peak_extra_mb']:.0f} MB of peak resident memory (one clip is {PT * 3 * PSIZE * PSIZE * 4 / 2 ** 20:.1f} MB as float)")
    print("\n  prepared folder through a DataLoader (batches of 16, random order, persistent workers, prefetch 4; a worker's peak RSS"
          "\n  includes the process image it shares with the main process and the prefetched batches in shared memory):")
    for name, r in res['loader'].items():
        rss = ', '.join(f'{m:.0f}' for m in r['worker_peak_rss_mb']) or '-'
        print(f"  {name:<24}{r['clips_per_s']:>9.0f} clips/s   peak RSS per worker (MB): {rss}")
    p = res['paper']
    print(f"\n  paper preset at {p['step_time']} s per step of {p['batch_size']} clips consumes {p['clips_per_s_needed']:.0f} clips/s: "
          f"{p['cores_prepared']} data worker core(s) from the prepared folder ({p['cores_prepared_uint8']} with uint8=True), "
          f"{p['cores_source']} from the source shards")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--json', action='store_true')
    ap.add_argument('--shard-gb', type=float, default=1.0)
    ap.add_argument('--step-time', type=float, default=0.071, help='seconds per training step of the paper preset')
    ap.add_argument('--batch-size', type=int, default=64, help='clips per training step (all ranks of one node)')
    args = ap.parse_args()
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        cpu_preset(res, Path(tmp), args.shard_gb)
        paper_preset(res, Path(tmp), args.step_time, args.batch_size)
    res['load_average'] = os.getloadavg()
    if args.json: print(json.dumps(res)); return
    report(res)


if __name__ == '__main__':
    main()
