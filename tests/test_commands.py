"""The README's commands, run as written (at the smoke preset) in a copy of the repository, and what they leave.

Each command of the README's `sh` blocks that trains or reports is run in a fresh copy of the tracked files that
shares this checkout's .venv, with `PRESET=smoke` for make and `-p preset smoke` for papermill added.
"""
import json, os, re, shutil, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent


def readme_commands() -> list[str]:
    "Command lines of the README's `sh` blocks (comments stripped)."
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / 'README.md').read_text(), re.S)
    return [line.split('  #')[0].strip() for b in blocks for line in b.splitlines() if line.strip() and not line.startswith('#')]


@pytest.fixture(scope='module')
def repo(tmp_path_factory):
    "A copy of the tracked files (timestamps kept, so make sees the shared .venv as installed)."
    d = tmp_path_factory.mktemp('clone') / 'twa'
    files = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith('reports/'): continue
        (d / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, d / f)
    (d / '.venv').symlink_to(VENV)
    (d / 'reports').mkdir()
    return d


def environment(repo: Path) -> dict:
    "The shell of a user of `repo`: its own `twa` first (console scripts too), the shared .venv's tools on PATH."
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(repo), 'PATH': f"{VENV / 'bin'}:{os.environ['PATH']}"}


def run(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(['bash', '-c', cmd], cwd=cwd, capture_output=True, text=True, env=environment(cwd))
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def smoke(cmd: str) -> str:
    return cmd + (' PRESET=smoke' if cmd.startswith('make ') else ' -p preset smoke')


def progress_lines(notebook: Path) -> list[str]:
    "The progress lines a run printed into its executed notebook."
    nb = json.loads(notebook.read_text())
    text = ''.join(''.join(o.get('text', '')) for c in nb['cells'] for o in c.get('outputs', []) if o.get('output_type') == 'stream')
    return [l for l in text.splitlines() if re.search(r': step \d+/\d+', l)]


def test_readme_names_the_commands():
    cmds = readme_commands()
    for start in ('make install', 'make test', 'make train ATTENTION=triple', 'make reports', 'make study', 'make lab', '.venv/bin/papermill nbs/train.ipynb'):
        assert any(c.startswith(start) for c in cmds), start


def test_make_train_as_written(repo):
    cmd = next(c for c in readme_commands() if c.startswith('make train'))
    out = run(smoke(cmd), repo)
    assert re.search(r'triple_smoke_s0: step 4/4 \(100%\), loss [\d.]+, [\d.]+ clips/s, \dm\d\ds elapsed, ETA 0m00s', out.stdout + out.stderr)
    report = repo / 'reports' / 'train_triple_smoke_s0.ipynb'                  # the smoke preset's own names
    assert (repo / 'runs' / 'triple_smoke_s0' / 'eval.json').exists() and not (repo / 'reports' / 'train_triple_s0.ipynb').exists()
    lines = progress_lines(report)
    assert 1 <= len(lines) <= 12 and lines[-1].startswith('triple_smoke_s0: step 4/4 (100%)')    # a compact record
    assert 'application/vnd.jupyter.widget-view+json' not in report.read_text()                  # no frozen widget
    before = report.read_bytes()
    again = subprocess.run(['bash', '-c', smoke(cmd)], cwd=repo, capture_output=True, text=True, env=environment(repo))
    assert again.returncode != 0 and 'no report was replaced' in again.stderr                      # the run folder is taken
    assert report.read_bytes() == before and (repo / 'reports' / 'failed' / 'train_triple_smoke_s0.ipynb').exists()
    out = run(smoke(cmd) + " ARGS='-p resume True'", repo)                                        # re-reported under a new name
    assert 'report: reports/train_triple_smoke_s0.2.ipynb' in out.stdout and report.read_bytes() == before


def test_papermill_as_written(repo):
    cmd = next(c for c in readme_commands() if c.startswith('.venv/bin/papermill nbs/train.ipynb reports/train_triple_mine.ipynb'))
    run(smoke(cmd), repo)                                               # after the README's make train: no collision
    nb = (repo / 'reports' / 'train_triple_mine.ipynb').read_text()
    assert 'image/gif' in nb and 'baseline_background' in nb


def test_make_reports_as_written(repo):
    extra = " VARIANTS='standard triple concat' SEEDS=2 ARGS='--lrs 1e-3 2e-3 --fraction 1 --max-seeds 2'"   # concat: one seed
    cmd = next(c for c in readme_commands() if c.startswith('make reports')) + extra
    run(".venv/bin/papermill nbs/train.ipynb other.ipynb -p attention standard -p preset smoke -p seed 1 -p steps 2 -p run_dir runs/main/standard_s1", repo)
    refused = subprocess.run(['bash', '-c', smoke(cmd)], cwd=repo, capture_output=True, text=True, env=environment(repo))
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and 'twa-run: refusing runs/main/standard_s1: it records other settings (' in said, said[-3000:]
    assert 'train.steps: 2 -> 4' in said and 'mv runs/main/standard_s1 runs/main/standard_s1.old' in said and 'Traceback' not in said
    assert not (repo / 'runs' / 'main' / 'standard_s0').exists()                              # refused before the main runs trained
    shutil.rmtree(repo / 'runs' / 'main' / 'standard_s1')
    out = run(smoke(cmd), repo)                                          # next to the README's earlier runs, which it leaves alone
    assert 'reports: done in' in out.stdout + out.stderr
    summary = pd.read_csv(repo / 'reports' / 'summary.csv')
    assert set(summary.variant) >= {'standard', 'triple', 'baseline_mean', 'baseline_background'}
    assert (summary.variant == 'concat').sum() == 1 and (summary.variant == 'standard').sum() == 2
    assert summary.git_commit.nunique(dropna=False) == 1                                          # one commit (none in this copy)
    sweep = pd.read_csv(repo / 'reports' / 'lr_sweep.csv')
    assert sweep.groupby('variant').chosen.sum().eq(1).all()
    records = repo / 'reports' / 'runs'                                                          # what git keeps of each run
    assert {p.name for p in (records / 'main' / 'triple_s0').iterdir()} == {'eval.json', 'metrics.parquet', 'config.json', 'model.safetensors'}
    assert {p.name for p in (records / 'main' / 'triple_s1').iterdir()} == {'eval.json', 'metrics.parquet'}
    html = (repo / 'reports' / 'html' / 'compare.html').read_text()
    assert 'hl-ipython3' not in html                                                             # no code cell in the HTML
    answers, first_figure = html.index('reconstruct better than <code>standard</code>?'), html.index('<img')
    assert answers < first_figure                                                                # the answers come first
    short, method = html.index('1. Quality:'), html.index('How the runs were made')
    assert short < html.index('2. Efficiency:') < html.index('3. Cost:') < answers < method      # one line each, then details, then the method
    for page in (repo / 'reports' / 'html').glob('*.html'):
        assert not re.search(r'>\s*(NaN|nan)\s*<', page.read_text()), page                    # missing values read "—"
    train_html = (repo / 'reports' / 'html' / 'train_triple_s0.html').read_text()
    assert train_html.index('baseline_background') < train_html.index('id="Data-and-settings"') and 'triple_s0: step' not in train_html
    # A report change reruns on the kept records alone: no runs/ (a fresh clone), nothing trains, the same summary.
    shutil.move(repo / 'runs', repo / 'runs.moved')
    again = run(smoke(cmd), repo)
    assert not re.search(r'^train ', again.stdout, re.M) and pd.read_csv(repo / 'reports' / 'summary.csv').equals(summary), again.stdout[-2000:]
    shutil.move(repo / 'runs.moved', repo / 'runs')
    study = run(smoke(next(c for c in readme_commands() if c.startswith('make study'))) + " SEEDS=2 ARGS='--lrs 1e-3 2e-3 --fraction 1 --replicate 2'", repo)
    assert 'study: done in' in study.stdout + study.stderr and (repo / 'reports' / 'html' / 'study.html').exists()
    assert not list((repo / 'runs' / 'study').glob('*base*'))                                   # the base point is make reports' runs
    table = pd.read_csv(repo / 'reports' / 'study.csv')
    assert set(table.factor) == {'base', 'window', 'site', 'budget', 'data'} and (table[table.factor == 'base'].seed.nunique() == 2)
    readme = (repo / 'README.md').read_text()
    assert '### Where it could flip (`make study`, ' in readme and '**Window:**' in readme and '<!-- reports/study.md -->' not in readme


def test_own_variant_as_written(repo, tmp_path):
    "The README's own variant, in a file outside the clone: trained by twa-train, papermill and make, compared with standard into a folder of one's own; reports/ untouched."
    readme = (ROOT / 'README.md').read_text()
    mine = tmp_path / 'my_attention.py'
    mine.write_text(re.search(r"```python\n# my_attention.py\n(.*?)```", readme, re.S).group(1))
    block = next(b for b in re.findall(r"```sh\n(.*?)```", readme, re.S) if 'make train ATTENTION=cosine' in b)
    cmds = [l.split('  #')[0].strip().replace('$PWD/my_attention.py', str(mine)).replace('_cpu_', '_smoke_') for l in block.splitlines() if l.strip()]
    reports = lambda: {p: p.stat().st_mtime_ns for p in (repo / 'reports').rglob('*') if p.is_file()}
    before = reports()
    for cmd in cmds: run(smoke(cmd), repo)
    after = reports()                                                                             # reports/ gains make train's reports, nothing else
    assert {p.name for p in set(after) - set(before)} == {f'train_{v}_smoke_s0.{x}' for v in ('cosine', 'standard') for x in ('ipynb', 'html')}
    assert all(after[p] == t for p, t in before.items())
    summary = pd.read_csv(repo / 'mine' / 'summary.csv')
    assert {'cosine', 'standard'} <= set(summary.variant) and json.loads((repo / 'runs' / 'cosine_smoke_s0' / 'eval.json').read_text())['config']['imports'] == str(mine)
    html = (repo / 'mine' / 'compare.html').read_text()
    assert 'Does <code>cosine</code> reconstruct better than <code>standard</code>?' in html and '`cosine`' in (repo / 'mine' / 'findings.md').read_text()
    assert (repo / 'reports' / 'train_cosine_smoke_s0.html').exists() and 'data:image/gif;base64' in (repo / 'reports' / 'train_cosine_smoke_s0.html').read_text()
    run(f".venv/bin/twa-train --imports {mine} --attention cosine --preset smoke --run-dir runs/own/cosine --progress off", repo)
    run(f".venv/bin/papermill nbs/train.ipynb {tmp_path / 'own.ipynb'} -p imports {mine} -p attention cosine -p preset smoke -p run_dir runs/own/cosine_pm", repo)
    refused = subprocess.run(['bash', '-c', 'make train ATTENTION=cosine PRESET=smoke'], cwd=repo, capture_output=True, text=True, env=environment(repo))
    said = refused.stdout + refused.stderr                                                         # without IMPORTS: one line that says what to do
    assert refused.returncode != 0 and "twa-report: ValueError: unknown variant 'cosine'" in said and 'pass imports=<file>' in said and 'Traceback' not in said, said[-2000:]


def test_make_lab_serves_the_repository_on_localhost_with_a_token(repo):
    "`make lab` starts (as root too), on 127.0.0.1, with a token, at the repository root."
    import signal, time, urllib.request
    env = {**environment(repo), 'JUPYTER_RUNTIME_DIR': str(repo / '.runtime')}
    lab = subprocess.Popen(['make', 'lab'], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        servers = []
        for _ in range(120):
            out = subprocess.run([str(VENV / 'bin' / 'jupyter'), 'server', 'list', '--json'], env=env, capture_output=True, text=True).stdout
            servers = [json.loads(l) for l in out.splitlines() if l.strip()]
            if servers: break
            assert lab.poll() is None, lab.stdout.read()
            time.sleep(1)
        s = servers[0]
        assert s['hostname'] in ('127.0.0.1', 'localhost') and len(s['token']) >= 32
        assert Path(s['root_dir']).resolve() == repo.resolve()
        with pytest.raises(urllib.error.HTTPError):                                   # no token, no files
            urllib.request.urlopen(f"http://127.0.0.1:{s['port']}/api/contents/nbs", timeout=10)
        listing = json.load(urllib.request.urlopen(f"http://127.0.0.1:{s['port']}/api/contents?token={s['token']}", timeout=10))
        assert {'nbs', 'reports'} <= {c['name'] for c in listing['content']}
    finally:
        os.killpg(lab.pid, signal.SIGTERM); lab.wait(timeout=30)
