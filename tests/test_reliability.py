"""Reliability under faults (issue: exact resume, crash safety, bad input, determinism, concurrency).

Each test drives real processes: `twa-train` (the CLI, also what torchrun runs), `python -c` scripts that
SIGKILL themselves at a chosen moment, and papermill on `nbs/train.ipynb`. All use the tiny `smoke` preset.
"""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMOKE = ['--attention', 'standard', '--preset', 'smoke', '--batch-size', '2', '--val-clips', '2', '--test-clips', '2', '--eval-every', '3', '--warmup', '1', '--progress', 'off']
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def train(run_dir, *extra, check=True):
    "Run `twa-train` on the smoke preset; returns the completed process."
    out = subprocess.run([str(BIN / 'twa-train'), *SMOKE, '--run-dir', str(run_dir), *extra], capture_output=True, text=True, env=ENV)
    if check: assert out.returncode == 0, out.stderr[-3000:]
    return out


def run_script(code):
    "Run a Python snippet in a fresh process (it may SIGKILL itself); returns the completed process."
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, env=ENV)


def weights(run_dir):
    from twa.train import load_trained
    return load_trained(run_dir)[0].state_dict()


def assert_same_run(a, b):
    from twa.train import same_log
    assert same_log(pd.read_parquet(a / 'metrics.parquet'), pd.read_parquet(b / 'metrics.parquet'))
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


KILLER = """
import os, signal
from twa.config import run_config
from twa.train import Trainer
run = run_config('standard', 'smoke', run_dir={run_dir!r}, steps=6, batch_size=2, val_clips=2, test_clips=2, eval_every=3, warmup=1, ckpt_every={ckpt_every})
class Killed(Trainer):
    {body}
Killed(run, progress='off').fit()
"""


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "An uninterrupted 6-step run, checkpoints every 2 steps."
    d = tmp_path_factory.mktemp('ref') / 'run'
    train(d, '--steps', '6', '--ckpt-every', '2')
    return d


def test_sigkill_then_resume_is_bitwise_exact(reference, tmp_path):
    d = tmp_path / 'run'
    body = """def save_checkpoint(self, step):
        super().save_checkpoint(step)
        if step == 2: os.kill(os.getpid(), signal.SIGKILL)   # dies right after the step-2 checkpoint"""
    out = run_script(KILLER.format(run_dir=str(d), ckpt_every=2, body=body))
    assert out.returncode == -signal.SIGKILL
    assert json.loads((d / 'eval.json').read_text())['status'] == 'running'      # what a killed run leaves
    assert len(pd.read_parquet(d / 'metrics.parquet')) == 2
    train(d, '--steps', '6', '--ckpt-every', '2', '--resume')
    assert_same_run(reference, d)
    log = pd.read_parquet(d / 'metrics.parquet')
    assert log['step'].tolist() == list(range(6))                              # no duplicated or missing steps


def test_kill_during_checkpoint_write_keeps_previous(reference, tmp_path):
    d = tmp_path / 'run'
    body = """def save_checkpoint(self, step):
        if step == 4:                                          # half-write the step-4 checkpoint, then die
            import twa.train as T
            def half(tmp): tmp.write_bytes(b'partial checkpoint'); os.kill(os.getpid(), signal.SIGKILL)
            T.atomic_write(self.run_dir / f'ckpt_{{step:08d}}.pt', half)
        super().save_checkpoint(step)"""
    out = run_script(KILLER.format(run_dir=str(d), ckpt_every=2, body=body))
    assert out.returncode == -signal.SIGKILL
    assert [p.name for p in sorted(d.glob('ckpt_*.pt'))] == ['ckpt_00000002.pt']   # the half-written file never got its name
    assert len(list(d.glob('.ckpt_*.tmp'))) == 1                                   # it is left under a temporary name
    torch.load(d / 'ckpt_00000002.pt', weights_only=True)                           # the previous one loads
    train(d, '--steps', '6', '--ckpt-every', '2', '--resume')
    assert_same_run(reference, d)
    assert list(d.glob('.ckpt_*.tmp')) == []                                       # resume removed the leftover


def test_truncated_checkpoint_is_reported_and_skipped(reference, tmp_path):
    import shutil
    d = tmp_path / 'run'
    shutil.copytree(reference, d)
    newest = d / 'ckpt_00000006.pt'
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    from twa.config import run_config
    from twa.train import Trainer
    run = run_config('standard', 'smoke', run_dir=str(d), steps=6, batch_size=2, val_clips=2, test_clips=2, eval_every=3, warmup=1, ckpt_every=2)
    with pytest.warns(UserWarning, match='ckpt_00000006.pt is unreadable'):
        t = Trainer(run, resume=True, progress='off')
    assert t.start_step == 4


def test_disk_full_is_clear_and_loses_nothing(tmp_path):
    d = tmp_path / 'run'
    body = """def save_checkpoint(self, step):
        if step == 4:
            import errno, torch
            def full(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')
            torch.save = full
        super().save_checkpoint(step)"""
    out = run_script(KILLER.format(run_dir=str(d), ckpt_every=2, body=body))
    assert out.returncode == 1 and f"No space left on device while writing {d / 'ckpt_00000004.pt'}" in out.stderr
    assert [p.name for p in d.iterdir() if p.name.endswith('.tmp')] == []          # the temporary file was removed
    assert torch.load(d / 'ckpt_00000002.pt', weights_only=True)['step'] == 2
    assert len(pd.read_parquet(d / 'metrics.parquet')) == 2
    assert not (d / 'lock').exists()                                                # the folder is free to resume


def test_same_config_twice_gives_identical_logs(reference, tmp_path):
    train(tmp_path / 'again', '--steps', '6', '--ckpt-every', '2')
    assert_same_run(reference, tmp_path / 'again')


def test_concurrent_runs(reference, tmp_path):
    "Two runs into different folders at once match the sequential run; a second run into a busy folder is refused."
    procs = [subprocess.Popen([str(BIN / 'twa-train'), *SMOKE, '--run-dir', str(tmp_path / n), '--steps', '6', '--ckpt-every', '2'],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV) for n in ('a', 'b')]
    for p in procs: assert p.wait() == 0, p.stderr.read().decode()[-2000:]
    for n in ('a', 'b'): assert_same_run(reference, tmp_path / n)

    busy = tmp_path / 'busy'
    long = subprocess.Popen([str(BIN / 'twa-train'), *SMOKE, '--run-dir', str(busy), '--steps', '3000', '--ckpt-every', '3000', '--eval-every', '3000'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    for _ in range(600):
        if (busy / 'lock').exists(): break
        time.sleep(0.1)
    second = train(busy, '--steps', '3000', '--ckpt-every', '3000', '--eval-every', '3000', '--resume', check=False)
    long_rc = long.wait()
    assert second.returncode != 0 and 'is in use by another run' in second.stderr
    assert long_rc == 0 and json.loads((busy / 'eval.json').read_text())['status'] == 'finished'


# ---- bad input through papermill: each fails before training and leaves no run behind

def make_corrupt_shards(d):
    d.mkdir(); (d / 'train-00000.parquet').write_bytes(b'not parquet' * 100)
    return d

def make_two_videos(d):
    import av
    d.mkdir()
    for g in range(3):
        with av.open(str(d / f'v{g}.mp4'), 'w') as c:
            s = c.add_stream('libx264', rate=8); s.height = s.width = 16; s.pix_fmt = 'yuv420p'
            for _ in range(6):
                for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format='rgb24')): c.mux(p)
            for p in s.encode(): c.mux(p)
    return d

BAD = {
    'unknown attention': (dict(attention='quad'), "unknown variant 'quad'"),
    'misspelled parameter': (dict(step=30), "unknown setting(s) ['step']; valid names: run: imports; model:"),
    'wrong type': (dict(num_slots='six'), "model.num_slots must be int, got 'six'"),
    'unknown preset': (dict(preset='huge'), "unknown preset 'huge'"),
    'unknown dataset': (dict(dataset='kinetics'), "unknown dataset 'kinetics'"),
    'negative steps': (dict(steps=-5), "steps must be >= 1, got -5"),
    'empty data_dir': (dict(dataset='openvid', data_dir='EMPTY'), "no files matching train-*.parquet"),
    'missing data_dir': (dict(dataset='openvid', data_dir='MISSING'), "needs data_dir, a folder that exists"),
    'corrupt files only': (dict(dataset='openvid', data_dir='CORRUPT'), "no readable rows for split 'train'"),
    'batch larger than data': (dict(dataset='videos', data_dir='VIDEOS', batch_size=4), "fewer than one global batch (4 x 1 ranks); lower batch_size. Found: videos: 3 clips"),
    'patch size not dividing the frame': (dict(patch_size=5), "patch_size=5 does not divide image_size=16"),
}


@pytest.mark.parametrize('case', list(BAD))
def test_bad_input_through_papermill(case, tmp_path):
    import papermill as pm
    params, message = BAD[case]
    params = {**dict(preset='smoke', steps=2, batch_size=2, run_dir=str(tmp_path / 'run'), progress='off'), **params}
    folders = {'EMPTY': lambda: (tmp_path / 'empty').mkdir() or tmp_path / 'empty', 'MISSING': lambda: tmp_path / 'missing',
               'CORRUPT': lambda: make_corrupt_shards(tmp_path / 'corrupt'), 'VIDEOS': lambda: make_two_videos(tmp_path / 'videos')}
    if params.get('data_dir') in folders: params['data_dir'] = str(folders[params['data_dir']]())
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(ROOT / 'nbs' / 'train.ipynb'), str(tmp_path / 'out.ipynb'), parameters=params, kernel_name='python3',
                            progress_bar=False, cwd=str(tmp_path))
    assert message in str(err.value.evalue), err.value.evalue
    assert not (tmp_path / 'run').exists()                 # nothing written that a later resume could trust


def test_other_configs_checkpoint_is_refused_through_papermill(tmp_path):
    import papermill as pm
    run = tmp_path / 'run'
    params = dict(preset='smoke', steps=2, batch_size=2, eval_every=2, run_dir=str(run), progress='off')
    pm.execute_notebook(str(ROOT / 'nbs' / 'train.ipynb'), str(tmp_path / 'ok.ipynb'), parameters=dict(params, attention='standard'),
                        kernel_name='python3', progress_bar=False, cwd=str(tmp_path))
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(ROOT / 'nbs' / 'train.ipynb'), str(tmp_path / 'bad.ipynb'), parameters=dict(params, attention='triple', resume=True),
                            kernel_name='python3', progress_bar=False, cwd=str(tmp_path))
    assert "written by another configuration (model.attention: 'standard' -> 'triple'" in str(err.value.evalue)
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before   # the earlier run is untouched


def test_rerunning_a_papermill_run_speaks_papermill(tmp_path):
    "A second run of the same command says how to resume in papermill's terms, and leaves the first run as it was."
    import papermill as pm
    run = tmp_path / 'run'
    params = dict(preset='smoke', steps=2, run_dir=str(run), progress='off', attention='standard')
    pm.execute_notebook(str(ROOT / 'nbs' / 'train.ipynb'), str(tmp_path / 'ok.ipynb'), parameters=params, kernel_name='python3',
                        progress_bar=False, cwd=str(tmp_path))
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(ROOT / 'nbs' / 'train.ipynb'), str(tmp_path / 'again.ipynb'), parameters=params, kernel_name='python3',
                            progress_bar=False, cwd=str(tmp_path))
    assert 'pass -p resume True to continue it' in str(err.value.evalue)
    pm.execute_notebook(str(ROOT / 'nbs' / 'train.ipynb'), str(tmp_path / 'resumed.ipynb'), parameters=dict(params, resume=True),
                        kernel_name='python3', progress_bar=False, cwd=str(tmp_path))
    after = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if not p.name.startswith('events')}
    assert after == {k: v for k, v in before.items() if not k.startswith('events')}   # a finished run's facts stay as they were
    assert len(list(run.glob('events*'))) == 1                                          # and no new, empty event file


def strict_json(path):
    "A file's JSON, refusing NaN and infinities as the JSON standard does."
    def refuse(name): raise ValueError(f"{path} holds {name}, which is not JSON")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


@pytest.mark.parametrize('sig, code', [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_runs_exit_non_zero_and_say_so(sig, code, tmp_path):
    "Ctrl-C or SIGTERM: a checkpoint, status `interrupted` in eval.json, exit 128 + signal."
    d = tmp_path / 'run'
    p = subprocess.Popen([str(BIN / 'twa-train'), *SMOKE, '--run-dir', str(d), '--steps', '100000', '--eval-every', '100000'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # a background shell ignores SIGINT; a terminal does not
    for _ in range(1200):                                  # until it trains: its first checkpoint writes metrics.parquet
        if (d / 'metrics.parquet').exists() or p.poll() is not None: break
        time.sleep(0.1)
    p.send_signal(sig)
    try: out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None: p.kill(); p.wait()
    assert p.returncode == code, err[-2000:]
    ev = strict_json(d / 'eval.json')
    assert ev['status'] == 'interrupted' and f"stopped by {signal.Signals(sig).name}" in ev['error'] and 'twa-train: stopped by' in err
    assert (d / f"ckpt_{ev['step']:08d}.pt").exists() and not (d / 'lock').exists()


def test_diverged_run_exits_non_zero_with_valid_json(tmp_path):
    "The issue's recipe: almost every step skipped as non-finite; the test metrics are not finite, so the run is `diverged`."
    d = tmp_path / 'run'
    out = train(d, '--lr', '1e30', '--grad-clip', '1e30', '--steps', '8', '--skip-nonfinite', check=False)
    ev = strict_json(d / 'eval.json')
    assert out.returncode == 1 and ev['status'] == 'diverged' and 'the model diverged' in out.stderr, out.stderr[-2000:]
    assert any(v is None for v in ev['test'].values())


def test_not_a_checkpoint_has_no_unsafe_hint(tmp_path):
    "A checkpoint of random bytes is named as not a checkpoint, without PyTorch's advice to load it unsafely."
    d = tmp_path / 'run'
    d.mkdir()
    (d / 'ckpt_00000002.pt').write_bytes(np.random.default_rng(0).bytes(5000))
    out = train(d, '--resume', check=False)
    assert out.returncode != 0 and 'is not a checkpoint: not the zip archive torch.save writes' in out.stderr, out.stderr[-2000:]
    assert 'weights_only' not in out.stderr


def test_help_shows_the_presets_defaults():
    out = subprocess.run([str(BIN / 'twa-train'), '--preset', 'smoke', '--help'], capture_output=True, text=True, env=ENV)
    assert out.returncode == 0 and '(default: None)' not in out.stdout
    assert 'defaults of the smoke preset' in out.stdout and 'default 4' in out.stdout and "--strict TRUE|FALSE" in out.stdout


def test_pair_kernel_notebook_run_beside_the_package():
    "nbdev_test runs `12_pair_kernel` in a process that may have trained through `twa.pair_kernel`: both keep working."
    out = run_script(f"""
        from pathlib import Path
        import torch
        from nbdev.test import test_nb
        from twa.model import SlotBasedVideoModel, ModelConfig, reconstruction_loss
        model, clip = SlotBasedVideoModel(ModelConfig(attention='triple')), torch.rand(1, 4, 3, 32, 32)
        reconstruction_loss(model(clip)[0], clip).backward()                 # registers the package's operators
        ok, _ = test_nb(Path({str(ROOT / 'nbs' / '12_pair_kernel.ipynb')!r}), skip_flags=[], force_flags=['slow'])
        for _ in range(3): reconstruction_loss(model(clip)[0], clip).backward()   # through the package's operators again
        print('notebook passed' if ok else 'notebook failed')
        """)
    assert out.returncode == 0 and 'notebook passed' in out.stdout, out.stderr[-3000:]
