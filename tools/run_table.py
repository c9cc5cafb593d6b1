# Run every config x seed, then write the results table.
#
#   python tools/run_table.py \
#       configs/cifar100/kd_resnet32x4_resnet8x4_1xb64_cifar100.py \
#       configs/cifar100/dkd_resnet32x4_resnet8x4_1xb64_cifar100.py \
#       --seeds 5 --work-dir work_dirs/table
#
# Each run is tools/train.py CONFIG --work-dir DIR/<config>/seed<k>
# --cfg-options randomness.seed=<k>. A run whose final checkpoint is its
# last_checkpoint, with its validation logged, is finished and skipped; one
# with an earlier last_checkpoint, or stopped during its final validation,
# was interrupted and continues with --resume (the configs' ExactResumeHook
# validates a run resumed at its end); any other starts. Runs go one after
# another on one GPU; --gpus K runs K GPUs' worth at a time
# (CUDA_VISIBLE_DEVICES per run); --launcher slurm submits each
# through tools/slurm_train.sh (srun, so --gpus K is how many GPUs are in
# use at once). A config named <N>xb<B> (e.g. the Cityscapes 4xb2 configs)
# takes N GPUs per run (tools/dist_train.sh), so that its batch is the
# recipe's. --dry-run prints the commands and the checks, runs nothing.
#
# Then it reads each finished run's validation metric (top-1, or mIoU) from
# its logs (<run>/<timestamp>/vis_data/scalars.json; a resumed run's logs
# are merged) and writes DIR/table.md (pair, loss, config, published, ours
# best mean ± std, ours last mean ± std, difference, runs), DIR/table.png
# (per pair: our runs, their mean ± std, the published number) and
# DIR/runs.json (every run's numbers and log files). The published number
# is the one in the config's header comment ("Published top-1: ...").
#
# Before launching it checks that the data and the teacher checkpoints are
# there (mmpretrain downloads CIFAR-100 where the network allows); what is
# missing stops it with the fix.
import argparse
import importlib.util
import json
import os
import os.path as osp
import re
import shlex
import subprocess
import sys
import time
from collections import deque
from typing import List

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN = osp.join(REPO, 'tools', 'train.py')
DIST_TRAIN = osp.join(REPO, 'tools', 'dist_train.sh')
SLURM_TRAIN = osp.join(REPO, 'tools', 'slurm_train.sh')
GEN = osp.join(REPO, 'tools', 'gen_cifar100_configs.py')
METRIC_LABELS = {'accuracy/top1': 'top-1', 'mIoU': 'mIoU'}


def _results_table():
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from mmrankkd.utils import results_table
    return results_table


# ---------------------------------------------------------------- configs
def _cifar_pairs():
    """(teacher, student) of tools/gen_cifar100_configs.py's PAIRS."""
    if not osp.isfile(GEN):
        return []
    spec = importlib.util.spec_from_file_location('gen_cifar100_configs', GEN)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return [(p['teacher'], p['student']) for p in gen.PAIRS]


def name_parts(config_name: str, cifar_pairs=()) -> tuple:
    """(loss, pair) of a config named ``<loss>_<teacher>_<student>_...``.

    The loss is the name's first ``_``-separated field. The pair is looked
    up in the CIFAR-100 pairs (whose architecture names contain ``_``);
    otherwise the next two fields are the teacher and the student.
    """
    loss, _, rest = config_name.partition('_')
    for teacher, student in cifar_pairs:
        if rest.startswith(f'{teacher}_{student}_'):
            return loss, f'{teacher} -> {student}'
    fields = rest.split('_')
    if len(fields) >= 3:
        return loss, f'{fields[0]} -> {fields[1]} ({"_".join(fields[2:])})'
    return loss, rest


def gpus_per_run(config_name: str) -> int:
    """N of ``<N>xb<B>`` in the name (the recipe's GPU count), else 1."""
    found = re.search(r'(?:^|_)(\d+)xb\d+', config_name)
    return int(found.group(1)) if found else 1


def cfg_options_dict(options: List[str]) -> dict:
    """``--cfg-options`` strings parsed as tools/train.py parses them."""
    from mmengine.config import DictAction
    ns = argparse.Namespace()
    if options:
        DictAction(option_strings=[], dest='opts')(None, ns, options)
    return getattr(ns, 'opts', {})


def load_config(path: str, options: List[str]):
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    opts = cfg_options_dict(options)
    if opts:
        cfg.merge_from_dict(opts)
    return cfg


def final_checkpoint(cfg) -> tuple:
    """(file name of the final checkpoint, final step) of a config."""
    train_cfg = cfg.train_cfg
    if train_cfg.get('max_epochs') is not None and train_cfg.get(
            'by_epoch', True) and 'IterBased' not in str(
                train_cfg.get('type', '')):
        return f'epoch_{train_cfg.max_epochs}.pth', train_cfg.max_epochs
    if train_cfg.get('max_iters') is not None:
        return f'iter_{train_cfg.max_iters}.pth', train_cfg.max_iters
    raise ValueError('train_cfg has neither max_epochs nor max_iters; '
                     'run_table.py needs one to know when a run is done.')


# ---------------------------------------------------------------- runs
class Run:
    """One config x seed."""

    def __init__(self, config, cfg, seed, work_dir, metric=None):
        self.config = config
        self.metric = metric
        # Resuming a run stopped during its final validation validates it.
        self.validates_on_resume = any(
            'ExactResumeHook' in str(h.get('type'))
            for h in cfg.get('custom_hooks') or [])
        self.config_name = osp.splitext(osp.basename(config))[0]
        self.seed = seed
        self.dir = osp.join(work_dir, self.config_name, f'seed{seed}')
        self.final_ckpt, self.final_step = final_checkpoint(cfg)
        self.gpus = gpus_per_run(self.config_name)

    def state(self) -> str:
        """'finished', 'interrupted' (a last_checkpoint before the final
        one, or the final one whose validation records stop before the
        final step: the run stopped during its final validation, and
        ``--resume`` validates it where the config has ExactResumeHook) or
        'new'."""
        marker = osp.join(self.dir, 'last_checkpoint')
        if not osp.isfile(marker):
            return 'new'
        with open(marker, encoding='utf-8') as f:
            last = osp.basename(f.read().strip())
        if last != self.final_ckpt or not osp.isfile(
                osp.join(self.dir, last)):
            return 'interrupted'
        if not self.validates_on_resume:
            return 'finished'
        rt = _results_table()
        try:
            res = rt.read_run(self.dir, self.metric)
        except rt.RunLogError:
            return 'finished'  # not a missing final score: collect() says
        return 'interrupted' if res['last_step'] < self.final_step else \
            'finished'


def build_command(run: Run, args, slot_devices) -> tuple:
    """(argv, extra environment) of one run."""
    train_args = ['--work-dir', run.dir, '--cfg-options',
                  f'randomness.seed={run.seed}'] + list(args.cfg_options)
    if run.state() == 'interrupted':
        train_args.append('--resume')
    env = {}
    if args.launcher == 'slurm':
        job = f'{run.config_name[:40]}-s{run.seed}'
        cmd = ['bash', SLURM_TRAIN, args.partition, job, run.config]
        env.update(GPUS=str(run.gpus), GPUS_PER_NODE=str(min(run.gpus, 8)),
                   PYTHON=sys.executable)
        return cmd + train_args, env
    if slot_devices is not None:
        env['CUDA_VISIBLE_DEVICES'] = ','.join(slot_devices)
    if run.gpus > 1:
        env.update(PYTHON=sys.executable,
                   PORT=str(29500 + int(slot_devices[0]) if slot_devices
                            and slot_devices[0].isdigit() else 29500))
        return ['bash', DIST_TRAIN, run.config, str(run.gpus)] + \
            train_args, env
    return [sys.executable, args.train_script, run.config] + train_args, env


def device_slots(total: int, per_run: int) -> List[List[str]]:
    """Split the visible GPUs (CUDA_VISIBLE_DEVICES if set, else 0..K-1)
    into groups of ``per_run``."""
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    devices = ([d for d in visible.split(',') if d.strip()]
               if visible else [str(i) for i in range(total)])
    if len(devices) < total:
        raise ValueError(
            f'--gpus {total}, but CUDA_VISIBLE_DEVICES={visible} names '
            f'{len(devices)}. Fix: --gpus {len(devices)} or list more '
            'devices.')
    devices = devices[:total]
    return [devices[i:i + per_run]
            for i in range(0, total - per_run + 1, per_run)]


def _fmt_cmd(cmd, env):
    return ' '.join([f'{k}={shlex.quote(v)}' for k, v in env.items()] +
                    [shlex.quote(str(c)) for c in cmd])


def execute(runs: List[Run], args, poll: float = 1.0) -> dict:
    """Launch the runs, ``--gpus`` worth at a time; return
    {run.dir: (return code, seconds)}."""
    queue = deque(runs)
    results = {}
    running = {}  # slot index -> (run, Popen, log file, start)
    per_run = {r.gpus for r in runs}
    group = max(per_run) if per_run else 1
    if args.launcher == 'slurm':
        slots = [None] * max(1, args.gpus // group)
    else:
        slots = device_slots(args.gpus, group)
    free = list(range(len(slots)))
    try:
        while queue or running:
            while queue and free:
                slot = free.pop(0)
                run = queue.popleft()
                cmd, env = build_command(run, args, slots[slot])
                os.makedirs(run.dir, exist_ok=True)
                out = open(osp.join(run.dir, 'run_table.log'), 'a',
                           encoding='utf-8')
                out.write(f'$ {_fmt_cmd(cmd, env)}\n')
                out.flush()
                print(f'[{run.config_name} seed {run.seed}] {run.state()}: '
                      f'{_fmt_cmd(cmd, env)}', flush=True)
                proc = subprocess.Popen(cmd, env=dict(os.environ, **env),
                                        stdout=out, stderr=subprocess.STDOUT)
                running[slot] = (run, proc, out, time.time())
            time.sleep(poll)
            for slot, (run, proc, out, start) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                out.close()
                seconds = time.time() - start
                results[run.dir] = (code, seconds)
                status = 'done' if code == 0 else f'FAILED ({code})'
                print(f'[{run.config_name} seed {run.seed}] {status} in '
                      f'{seconds:.0f} s; output: '
                      f'{osp.join(run.dir, "run_table.log")}', flush=True)
                del running[slot]
                free.append(slot)
    except KeyboardInterrupt:
        for run, proc, out, _ in running.values():
            proc.terminate()
            proc.wait()
            out.close()
        print('interrupted: rerun the same command to resume', flush=True)
        raise
    return results


# ---------------------------------------------------------------- checks
def _cifar_files(root):
    return [osp.join(root, 'cifar-100-python', name)
            for name in ('train', 'test', 'meta')]


def download_cifar100(root):
    """mmpretrain's CIFAR-100 download (archive, md5 check, extraction)."""
    from mmpretrain.datasets import CIFAR100
    from mmpretrain.datasets.utils import download_and_extract_archive
    download_and_extract_archive(CIFAR100.url, root,
                                 filename=CIFAR100.filename,
                                 md5=CIFAR100.tgz_md5)


def preflight(configs, download=True) -> List[str]:
    """What is missing to run ``configs`` ({path: cfg}), as messages with
    the fix; CIFAR-100 is downloaded first where ``download`` and the
    network allow."""
    problems = []
    roots, seen = [], set()
    for path, cfg in configs.items():
        for loader in ('train_dataloader', 'val_dataloader'):
            dataset = cfg.get(loader, {}).get('dataset', {})
            root = dataset.get('data_root')
            if root and (dataset.get('type'), root) not in seen:
                seen.add((dataset.get('type'), root))
                roots.append((dataset.get('type'), root, path))
        ckpt = cfg.model.get('teacher_ckpt')
        if isinstance(ckpt, str) and '://' not in ckpt and not osp.isfile(
                ckpt):
            fix = ('python tools/fetch_cifar_teachers.py (downloads and '
                   'converts the released CIFAR-100 teachers to '
                   'checkpoints/crd/)' if 'checkpoints/crd/' in ckpt else
                   'put the teacher checkpoint there')
            problems.append(
                f'teacher checkpoint "{ckpt}" of {path} does not exist. '
                f'Fix: {fix}, or --cfg-options model.teacher_ckpt=PATH.')
    for kind, root, path in roots:
        if kind == 'CIFAR100':
            if all(osp.isfile(f) for f in _cifar_files(root)):
                continue
            error = 'not downloaded (--dry-run)'
            if download:
                try:
                    download_cifar100(root)
                    continue
                except Exception as e:  # no network, a proxy, a bad md5
                    error = f'{type(e).__name__}: {e}'
            problems.append(
                f'CIFAR-100 is not in "{root}" (needs '
                f'{", ".join(_cifar_files(root))}) and mmpretrain\'s '
                f'download failed: {error}. Fix: download '
                'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz '
                f'elsewhere and extract it into "{root}" (tar xzf '
                f'cifar-100-python.tar.gz -C {root}), or point the configs '
                'at a copy with --cfg-options '
                'train_dataloader.dataset.data_root=DIR '
                'val_dataloader.dataset.data_root=DIR '
                'test_dataloader.dataset.data_root=DIR.')
        elif not osp.isdir(root):
            problems.append(
                f'data_root "{root}" of {path} ({kind}) does not exist. '
                'Fix: prepare the data set as its library documents (mmseg '
                'Cityscapes: docs/en/user_guides/2_dataset_prepare.md) or '
                'set train_dataloader.dataset.data_root / '
                'val_dataloader.dataset.data_root with --cfg-options.')
    return problems


# ---------------------------------------------------------------- table
def collect(runs: List[Run], args, cifar_pairs, metric=None):
    """Rows of the table (one per config) and the per-run records."""
    rt = _results_table()
    rows, records, errors = [], [], []
    for config in dict.fromkeys(r.config for r in runs):
        config_runs = [r for r in runs if r.config == config]
        name = config_runs[0].config_name
        loss, pair = name_parts(name, cifar_pairs)
        done = []
        for run in config_runs:
            record = dict(config=config, seed=run.seed, dir=run.dir,
                          state=run.state())
            if record['state'] == 'finished':
                try:
                    res = rt.read_run(run.dir, metric, run.final_step)
                    done.append(res)
                    record.update(res)
                except rt.RunLogError as e:
                    record['error'] = str(e)
                    errors.append(str(e))
            records.append(record)
        metric_key = done[0]['metric'] if done else (metric or '')
        published = rt.read_published(config)
        rows.append(rt.summarize(dict(
            config=config, config_name=name, loss=loss, pair=pair,
            published=published, runs=done, requested=len(config_runs),
            metric_label=METRIC_LABELS.get(
                metric_key, published['metric'] or metric_key or 'top-1'))))
    return rows, records, errors


def write_outputs(rows, records, work_dir, notes=()):
    rt = _results_table()
    os.makedirs(work_dir, exist_ok=True)
    md = rt.write_markdown(osp.join(work_dir, 'table.md'), rows, notes)
    png = rt.write_figure(osp.join(work_dir, 'table.png'), rows)
    with open(osp.join(work_dir, 'runs.json'), 'w', encoding='utf-8') as f:
        json.dump(records, f, indent=1, default=str)
    return md, png


# ---------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Run configs x seeds (skipping finished runs, resuming '
        'interrupted ones) and write DIR/table.md and DIR/table.png')
    parser.add_argument('configs', nargs='+', metavar='CONFIG')
    parser.add_argument('--seeds', type=int, default=1,
                        help='runs per config, seeds 0..N-1 (default 1)')
    parser.add_argument('--work-dir', required=True,
                        help='runs go to DIR/<config>/seed<k>; the table '
                        'to DIR/table.md, DIR/table.png')
    parser.add_argument('--gpus', type=int, default=1,
                        help='GPUs in use at once (default 1: one run '
                        'after another)')
    parser.add_argument('--launcher', choices=['none', 'slurm'],
                        default='none')
    parser.add_argument('--partition', help='slurm partition '
                        '(--launcher slurm)')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        metavar='KEY=VALUE',
                        help='passed to every tools/train.py run')
    parser.add_argument('--metric', choices=sorted(METRIC_LABELS),
                        help='the validation metric (default: accuracy/top1 '
                        'where logged, else mIoU)')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the runs, their state and commands, and '
                        'the checks; run nothing, write nothing')
    parser.add_argument('--table-only', action='store_true',
                        help='launch nothing; write the table from the runs '
                        'there')
    parser.add_argument('--train-script', default=TRAIN,
                        help='the training script (default tools/train.py); '
                        'tests use a wrapper for synthetic data')
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.gpus < 1:
        parser.error('--seeds and --gpus must be >= 1')
    if args.launcher == 'slurm' and not args.partition:
        parser.error('--launcher slurm needs --partition PARTITION')
    if any(o.startswith('randomness.seed=') for o in args.cfg_options):
        parser.error('randomness.seed is set per run (0..N-1); use --seeds '
                     'N instead of --cfg-options randomness.seed=...')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return _main(args)
    except ValueError as e:  # bad --gpus / config; names the fix
        print(f'error: {e}', file=sys.stderr)
        return 1


def _main(args) -> int:
    for config in args.configs:
        if not osp.isfile(config):
            print(f'error: config "{config}" does not exist.',
                  file=sys.stderr)
            return 1
    cfgs = {c: load_config(c, args.cfg_options)
            for c in dict.fromkeys(args.configs)}
    runs = [Run(c, cfgs[c], seed, args.work_dir, args.metric) for c in cfgs
            for seed in range(args.seeds)]
    per_run = max(r.gpus for r in runs)
    if args.launcher == 'none' and not args.table_only and \
            per_run > args.gpus:
        names = [r.config_name for r in runs if r.gpus > args.gpus]
        print(f'error: {names[0]} is a {per_run}-GPU recipe (<N>xb<B> in '
              f'its name); --gpus {args.gpus} cannot run it without '
              f'changing its batch. Fix: --gpus {per_run} (or more).',
              file=sys.stderr)
        return 1
    todo = [r for r in runs if r.state() != 'finished']
    for run in runs:
        print(f'{run.config_name} seed {run.seed}: {run.state()}')
    if args.dry_run:
        slots = ([None] if args.launcher == 'slurm' else
                 device_slots(args.gpus, per_run))
        for i, run in enumerate(todo):
            cmd, env = build_command(run, args, slots[i % len(slots)])
            print(_fmt_cmd(cmd, env))
        for problem in preflight(cfgs, download=False):
            print(f'check: {problem}')
        return 0
    if todo and not args.table_only:
        problems = preflight({r.config: cfgs[r.config] for r in todo})
        if problems:
            for problem in problems:
                print(f'error: {problem}', file=sys.stderr)
            return 1
        execute(todo, args)
    rows, records, errors = collect(runs, args, _cifar_pairs(), args.metric)
    md, png = write_outputs(rows, records, args.work_dir)
    unfinished = [r for r in records if r['state'] != 'finished']
    for rec in unfinished:
        print(f'not finished: {rec["dir"]} ({rec["state"]}); rerun the '
              'same command to continue it', file=sys.stderr)
    for error in errors:
        print(f'error: {error}', file=sys.stderr)
    print(f'wrote {md} and {png}')
    return 1 if unfinished or errors else 0


if __name__ == '__main__':
    sys.exit(main())
