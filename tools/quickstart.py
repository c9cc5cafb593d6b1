# The quick-start demo (`make demo`): the whole product on a built-in default,
# in under 10 minutes on a 2-core CPU, through the same configs and tools
# users run.
#
#   1. writes a small synthetic Cityscapes-layout data set (first run only);
#   2. trains a teacher (PSPNet R18-D8, half width) with tools/train.py;
#   3. distils a quarter-width PSPNet R18-D8 student from it with Balance
#      Divergence + Kendall rank losses (tools/train.py, LogitDistiller);
#   4. trains the same student alone, same schedule (the baseline);
#   5. exports the distilled student (tools/export_student.py's code), runs
#      all three models on validation images with mmseg's inference API, and
#      prints a table and writes a figure.
#
#   python tools/quickstart.py [--work-dir work_dirs/quickstart]
#                              [--iters-scale 1.0] [--seed 0] [--verbose]
#                              [--threads 1]
#   python tools/quickstart.py --report-only   # redo table + figure only
#
# Measured on this 2-core CPU with torch's default of 2 threads: 5m33s
# (teacher 2m09s, distilled student 1m55s, student alone 1m08s). Results are
# deterministic for a seed and a --threads value.
import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import textwrap
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs', 'quickstart')
TEACHER_CFG = osp.join(CONFIGS,
                       'teacher_pspnet_r18-d8-w32_synthcity-64x128.py')
STUDENT_CFG = osp.join(CONFIGS,
                       'student_pspnet_r18-d8-w16_synthcity-64x128.py')
DISTILL_CFG = osp.join(
    CONFIGS, 'distill_bdd-kendall_r18w32-to-r18w16_synthcity-64x128.py')
DATA = dict(num_train=200, num_val=20, height=128, width=256)
NUM_SHOWN = 3  # validation images in the figure
# CPU threads per process. One: on a small machine whose cores other
# processes also use, torch's small ops spin in OpenMP barriers with two
# threads (measured on 2 cores, see the README's "Timing on small machines").
DEFAULT_THREADS = 1

# Runner output shown in the terminal (everything goes to the log files).
_SHOWN = re.compile(r'Iter\(train\)|Iter\(val\) \[\d+/\d+\] +aAcc|'
                    r'Saving checkpoint|(WARNING|ERROR) - |Traceback|Error')
_PREFIX = re.compile(r'^\d+/\d+ (\d+:\d+:\d+) - mmengine - INFO - ')
# Known harmless runner warnings, kept out of the terminal (not the logs).
_HIDDEN = re.compile(r'"FileClient" will be deprecated|"HardDiskBackend" is '
                     r'the alias|The prefix is not set in metric')


def parse_args():
    parser = argparse.ArgumentParser(
        description='mmrankkd quick-start: teacher, distilled student and '
        'student alone on synthetic street scenes, on CPU')
    parser.add_argument(
        '--work-dir',
        default='work_dirs/quickstart',
        help='where data, logs, checkpoints, table and figure go')
    parser.add_argument(
        '--iters-scale',
        type=float,
        default=1.0,
        help='multiply every run\'s iterations (1.0 fits in ~10 minutes '
        'on 2 CPU cores)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument(
        '--report-only',
        action='store_true',
        help='no training: redo the table and figure from the runs already '
        'in --work-dir')
    parser.add_argument(
        '--verbose',
        action='store_true',
        help='show all runner output, not only progress lines')
    parser.add_argument(
        '--threads',
        type=int,
        default=DEFAULT_THREADS,
        help='CPU threads of each training and inference process '
        f'(OMP_NUM_THREADS; default {DEFAULT_THREADS}, see the README\'s '
        '"Timing on small machines"); 0 leaves the environment\'s or '
        'torch\'s default (one per core)')
    return parser.parse_args()


def thread_env(threads):
    """Environment variables that give a process ``threads`` CPU threads
    (none for 0: the environment's or torch's default)."""
    if threads <= 0:
        return {}
    return dict(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def _fmt_time(seconds):
    if seconds != seconds:  # NaN: not measured
        return '?'
    seconds = int(round(seconds))
    return f'{seconds // 60}m{seconds % 60:02d}s'


class Stages:
    """Prints one banner per stage with the elapsed time."""

    def __init__(self, total):
        self.total = total
        self.index = 0
        self.start = time.time()

    def begin(self, title):
        self.index += 1
        self.stage_start = time.time()
        print(f'\n==> [{self.index}/{self.total}] {title}  '
              f'(elapsed {_fmt_time(time.time() - self.start)})',
              flush=True)

    def end(self, what=''):
        took = time.time() - self.stage_start
        print(f'<== [{self.index}/{self.total}] done in {_fmt_time(took)}'
              f'{"; " + what if what else ""}  '
              f'(elapsed {_fmt_time(time.time() - self.start)})',
              flush=True)
        return took


def train(config, work_dir, iters_scale, seed, data_root, verbose,
          extra=(), threads=0):
    """Runs tools/train.py on ``config``; returns (checkpoint, seconds)."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    iters = max(2, int(round(cfg.train_cfg.max_iters * iters_scale)))
    # (at least 3 iterations apart, so tiny smoke-test runs stay quick)
    val_interval = max(min(iters, 3),
                       int(round(cfg.train_cfg.val_interval * iters_scale)))
    # The quick-start schedules are [LinearLR warm-up, PolyLR to the end].
    warmup = min(cfg.param_scheduler[0].end, iters - 1)
    options = [
        f'train_cfg.max_iters={iters}',
        f'train_cfg.val_interval={val_interval}',
        f'param_scheduler.0.end={warmup}',
        f'param_scheduler.1.begin={warmup}',
        f'param_scheduler.1.end={iters}',
        f'default_hooks.checkpoint.interval={iters}',
        f'randomness.seed={seed}',
    ] + [f'{k}={v}' for k, v in data_root_options(data_root).items()
         ] + list(extra)
    cmd = [
        sys.executable,
        osp.join(REPO, 'tools', 'train.py'), config, '--work-dir', work_dir,
        '--cfg-options'
    ] + options
    os.makedirs(work_dir, exist_ok=True)
    log_path = osp.join(work_dir, 'train_output.log')
    print(f'    {osp.relpath(config, REPO)}: {iters} iterations, '
          f'output in {log_path}', flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED='1', **thread_env(threads))
    start = time.time()
    lines = []
    with open(log_path, 'w') as log:
        log.write(' '.join(cmd) + '\n')
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1)
        for line in proc.stdout:
            log.write(line)
            lines.append(line)
            lines = lines[-80:]
            if verbose:
                print(line, end='', flush=True)
            elif _SHOWN.search(line) and not _HIDDEN.search(line):
                print('    ' + _PREFIX.sub(r'\1 ', line.rstrip()),
                      flush=True)
        rc = proc.wait()
    seconds = time.time() - start
    if rc != 0:
        print(''.join(lines[-60:]), file=sys.stderr)
        sys.exit(f'tools/train.py failed (exit code {rc}) for {config}; '
                 f'full output: {log_path}')
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    return checkpoint, seconds


def read_scalars(work_dir):
    """(train entries, val entries) of the newest run in ``work_dir``."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    train_rows, val_rows = [], []
    if not files:
        return train_rows, val_rows
    with open(files[-1]) as f:
        for line in f:
            row = json.loads(line)
            (val_rows if 'mIoU' in row else train_rows).append(row)
    return train_rows, val_rows


def predict(models, data_root, num_val):
    """Runs each model on the validation images with mmseg's inference API.

    Returns:
        tuple: (list of per-image dicts with ``img``, ``gt`` and one
        ``SegDataSample`` per model name, dataset class names).
    """
    import cv2
    from mmseg.apis import inference_model
    img_dir = osp.join(data_root, 'leftImg8bit', 'val')
    images = sorted(glob.glob(osp.join(img_dir, '*', '*_leftImg8bit.png')))
    samples = []
    for path in images[:num_val]:
        gt_path = path.replace('leftImg8bit', 'gtFine', 1).replace(
            '_leftImg8bit.png', '_gtFine_labelTrainIds.png')
        item = dict(
            img=cv2.imread(path)[..., ::-1].copy(),
            gt=cv2.imread(gt_path, cv2.IMREAD_UNCHANGED))
        for name, model in models.items():
            item[name] = inference_model(model, path)
        samples.append(item)
    return samples


def agreement_with_teacher(samples, name):
    """mmrankkd's TeacherStudentAgreement of model ``name`` vs the teacher:
    percent of valid pixels with the same class, mean Kendall tau."""
    import torch
    from mmrankkd.evaluation import TeacherStudentAgreement
    # The quick-start heads keep mmseg's default ignore label, 255 (the
    # synthetic data's void pixels), as the distill loops would pass it.
    metric = TeacherStudentAgreement(ignore_index=255)
    for item in samples:
        s, t = item[name], item['teacher']
        metric.process(None, [
            dict(
                pred_sem_seg=dict(data=s.pred_sem_seg.data),
                seg_logits=dict(data=s.seg_logits.data),
                teacher_pred_sem_seg=dict(data=t.pred_sem_seg.data),
                teacher_seg_logits=dict(data=t.seg_logits.data),
                gt_sem_seg=dict(data=torch.from_numpy(item['gt'])[None]))
        ])
    return metric.compute_metrics(metric.results)


def colorize(labels, palette):
    import numpy as np
    out = np.zeros(labels.shape + (3, ), np.uint8)
    valid = labels < len(palette)
    out[valid] = np.asarray(palette, np.uint8)[labels[valid]]
    return out


def make_figure(path, runs, samples, classes, palette):
    """Loss curves, validation curves and predictions side by side."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    names = [name for name in ('teacher', 'student', 'distilled')
             if name in runs]
    n_img = len(samples)
    height = 4.6 + 1.8 * n_img  # inches
    fig = plt.figure(figsize=(17, height))
    fig.suptitle(
        'mmrankkd quick-start: PSPNet R18-D8 teacher (half width) -> '
        'student (quarter width), Balance Divergence + Kendall rank '
        'distillation, synthetic street scenes', fontsize=12)
    top = fig.add_gridspec(
        1, len(names) + 1, left=0.05, right=0.98, top=1 - 0.75 / height,
        bottom=1 - 3.9 / height, wspace=0.28)
    for i, name in enumerate(names):
        ax = fig.add_subplot(top[0, i])
        rows = runs[name]['train_rows']
        keys = sorted({k for r in rows for k in r if 'loss' in k})
        for key in keys:
            pts = [(r['step'], r[key]) for r in rows if key in r]
            if key == 'loss':
                ax.plot(*zip(*pts), '--', color='black', lw=1.2,
                        label='loss (total)')
            else:
                ax.plot(*zip(*pts), lw=1.6, label=key)
        ax.set_title(f'{runs[name]["title"]}: training losses', fontsize=10)
        ax.set_xlabel('iteration')
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(fontsize=8)
    ax = fig.add_subplot(top[0, len(names)])
    colors = dict(teacher='tab:blue', student='tab:orange',
                  distilled='tab:green')
    for name in names:
        rows = runs[name]['val_rows']
        if rows:
            ax.plot([r['step'] for r in rows], [r['mIoU'] for r in rows],
                    'o-', color=colors[name], ms=3,
                    label=f'{runs[name]["title"]} mIoU')
        agree = [(r['step'], r['agreement/top1']) for r in rows
                 if 'agreement/top1' in r]
        if agree:
            ax.plot(*zip(*agree), 's--', color=colors[name], ms=3,
                    label=f'{runs[name]["title"]} agreement w/ teacher')
    ax.set_title('validation (%)', fontsize=10)
    ax.set_xlabel('iteration')
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='center right')

    cols = [('image', None), ('ground truth', None)] + [
        (f'{runs[n]["title"]} ({runs[n]["miou"]:.1f} mIoU)', n)
        for n in names
    ]
    grid = fig.add_gridspec(
        n_img, len(cols), left=0.02, right=0.98, top=1 - 4.75 / height,
        bottom=0.6 / height,
        wspace=0.03, hspace=0.12)
    for r, item in enumerate(samples):
        for c, (title, name) in enumerate(cols):
            ax = fig.add_subplot(grid[r, c])
            if c == 0:
                ax.imshow(item['img'])
            elif c == 1:
                ax.imshow(colorize(item['gt'], palette))
            else:
                pred = item[name].pred_sem_seg.data[0].numpy()
                ax.imshow(colorize(pred.astype(np.int64), palette))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=10)
    handles = [
        Patch(color=np.asarray(palette[i]) / 255., label=cls)
        for i, cls in enumerate(classes)
    ] + [Patch(color='black', label='ignore')]
    fig.legend(
        handles=handles, loc='lower center', ncol=10, fontsize=8,
        frameon=False)
    fig.savefig(path, dpi=90)
    plt.close(fig)


NOTES = (
    'mIoU: validation mIoU (%) from the runner, at the last iteration. '
    'agree: pixels (ground truth not ignore) where the model predicts '
    "the teacher's class; tau: mean Kendall tau of the class logits "
    'with the teacher (mmrankkd.TeacherStudentAgreement). ckpt: the '
    'last checkpoint, weights plus AdamW state for an exact --resume '
    '(the distilled one holds the student only). train time: wall '
    'clock of tools/train.py, validation included.')


def data_root_options(data_root):
    """``--cfg-options`` that point every data loader at ``data_root``."""
    return {
        f'{loader}.dataset.data_root': data_root
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader')
    }


def export_distilled(runs, work_dir, data_root):
    """Exports the distilled student (tools/export_student.py's code) as a
    plain mmseg checkpoint and config; returns ``export_student``'s dict."""
    from mmrankkd.engine.export import export_student
    export = export_student(
        runs['distilled']['ckpt'],
        osp.join(work_dir, 'distilled', 'student.pth'), DISTILL_CFG,
        cfg_options=data_root_options(data_root))
    print(f'    exported the distilled student: {export["checkpoint"]} '
          f'(config {export["config"]})', flush=True)
    return export


def load_models(runs, export, data_root):
    """The three models through mmseg's ``init_model`` (the distilled one
    from its export, as a user loads it); records their parameter counts
    (millions) in ``runs``."""
    import warnings

    from mmengine.config import Config
    # mmseg's deprecation notes when building models (build_loss, ...)
    warnings.filterwarnings('ignore', category=UserWarning, module='mmseg')
    from mmseg.apis import init_model
    models = {}
    for name, config, ckpt in (
            ('teacher', TEACHER_CFG, runs['teacher']['ckpt']),
            ('student', STUDENT_CFG, runs['student']['ckpt']),
            ('distilled', export['config'], export['checkpoint'])):
        cfg = Config.fromfile(config)
        cfg.test_dataloader.dataset.data_root = data_root
        models[name] = init_model(cfg, ckpt, device='cpu')
        runs[name]['params'] = sum(
            p.numel() for p in models[name].parameters()) / 1e6
    return models


def collect_results(runs, work_dir, samples):
    """Fills ``runs`` with each run's logged curves, last mIoU, agreement
    with the teacher and checkpoint size."""
    for name, run in runs.items():
        run['train_rows'], run['val_rows'] = read_scalars(
            osp.join(work_dir, name))
        run['miou'] = run['val_rows'][-1]['mIoU']
        run['agreement'] = agreement_with_teacher(samples, name)
        run['ckpt_mb'] = file_mb(run['ckpt'])


def format_table(runs):
    """The results table, one row per model."""
    header = (f'{"model":<20}{"params":>9}{"ckpt":>9}{"mIoU":>8}'
              f'{"agree":>8}{"tau":>7}{"train time":>12}')
    lines = [header, '-' * len(header)]
    for name in ('teacher', 'student', 'distilled'):
        run = runs[name]
        lines.append(
            f'{run["title"]:<20}{run["params"]:>8.2f}M'
            f'{run["ckpt_mb"]:>7.1f}MB{run["miou"]:>8.2f}'
            f'{run["agreement"]["top1"]:>7.1f}%'
            f'{run["agreement"].get("kendall_tau", float("nan")):>7.3f}'
            f'{_fmt_time(run["seconds"]):>12}')
    return '\n'.join(lines)


def write_summary(runs, work_dir, table, notes):
    """``summary.json`` (everything but the curves) and ``summary.txt``
    (table and notes)."""
    summary = {
        name: {k: v for k, v in run.items()
               if k not in ('train_rows', 'val_rows')}
        for name, run in runs.items()
    }
    with open(osp.join(work_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    with open(osp.join(work_dir, 'summary.txt'), 'w') as f:
        f.write(table + '\n\n' + notes + '\n')


def summarize(runs, work_dir, data_root):
    """Exports the distilled student, runs the three models on validation
    images, and writes ``summary.{json,txt}`` and the figure.

    Args:
        runs (dict): ``name -> dict(title, ckpt, seconds)`` for ``teacher``,
            ``student`` and ``distilled``; filled in with the results.
        work_dir (str): The quick-start work directory.
        data_root (str): The synthetic data set.

    Returns:
        tuple[str, str, str]: The table, its notes and the figure's path.
    """
    import mmrankkd  # noqa: F401
    export = export_distilled(runs, work_dir, data_root)
    models = load_models(runs, export, data_root)
    samples = predict(models, data_root, DATA['num_val'])
    collect_results(runs, work_dir, samples)

    meta = models['teacher'].dataset_meta
    fig_path = osp.join(work_dir, 'quickstart.png')
    make_figure(fig_path, runs, samples[:NUM_SHOWN], meta['classes'],
                meta['palette'])
    table = format_table(runs)
    notes = textwrap.fill(NOTES, 79)
    write_summary(runs, work_dir, table, notes)
    return table, notes, fig_path


def previous_runs(work_dir):
    """``runs`` for :func:`summarize` from an earlier quick-start."""
    titles = dict(teacher='teacher', student='student alone',
                  distilled='distilled student')
    old = {}
    if osp.isfile(osp.join(work_dir, 'summary.json')):
        with open(osp.join(work_dir, 'summary.json')) as f:
            old = json.load(f)
    runs = {}
    for name, title in titles.items():
        last = osp.join(work_dir, name, 'last_checkpoint')
        if not osp.isfile(last):
            sys.exit(f'No finished {name} run in {work_dir}: run '
                     'tools/quickstart.py without --report-only first.')
        with open(last) as f:
            ckpt = f.read().strip()
        runs[name] = dict(title=title, ckpt=ckpt,
                          seconds=old.get(name, {}).get('seconds',
                                                        float('nan')))
    return runs


def file_mb(path):
    return osp.getsize(path) / 2**20


def main():
    args = parse_args()
    work_dir = osp.abspath(args.work_dir)
    data_root = osp.join(work_dir, 'data', 'synthetic_cityscapes')
    stages = Stages(2 if args.report_only else 5)
    print(f'mmrankkd quick-start: everything goes under {work_dir}',
          flush=True)
    if args.threads > 0:
        import torch
        torch.set_num_threads(args.threads)

    stages.begin('Synthetic street scenes (Cityscapes layout)')
    from mmrankkd.datasets import make_synthetic_cityscapes
    existed = osp.isfile(osp.join(data_root, 'synthetic_cityscapes.json'))
    make_synthetic_cityscapes(data_root, seed=args.seed, **DATA)
    stages.end(f'{"reused" if existed else "wrote"} {DATA["num_train"]} '
               f'train + {DATA["num_val"]} val images '
               f'({DATA["height"]}x{DATA["width"]}) in {data_root}')

    if args.report_only:
        runs = previous_runs(work_dir)
        stages.begin('Results from the runs in the work dir')
        table, notes, fig_path = summarize(runs, work_dir, data_root)
        stages.end()
        print('\n' + table + '\n\n' + notes + f'\n\nFigure: {fig_path}')
        return

    runs = {}
    stages.begin('Teacher: PSPNet R18-D8, half width, trained from scratch')
    ckpt, secs = train(TEACHER_CFG, osp.join(work_dir, 'teacher'),
                       args.iters_scale, args.seed, data_root, args.verbose,
                       threads=args.threads)
    runs['teacher'] = dict(title='teacher', config=TEACHER_CFG, ckpt=ckpt,
                           seconds=secs)
    stages.end(f'checkpoint {ckpt}')

    stages.begin('Distilled student: PSPNet R18-D8, quarter width, '
                 'BDD + Kendall rank from the teacher')
    ckpt, secs = train(
        DISTILL_CFG, osp.join(work_dir, 'distilled'), args.iters_scale,
        args.seed, data_root, args.verbose,
        extra=[f'model.teacher_ckpt={runs["teacher"]["ckpt"]}'],
        threads=args.threads)
    runs['distilled'] = dict(title='distilled student', config=DISTILL_CFG,
                             ckpt=ckpt, seconds=secs)
    stages.end(f'checkpoint {ckpt}')

    stages.begin('Student alone: same network and schedule, no teacher')
    ckpt, secs = train(STUDENT_CFG, osp.join(work_dir, 'student'),
                       args.iters_scale, args.seed, data_root, args.verbose,
                       threads=args.threads)
    runs['student'] = dict(title='student alone', config=STUDENT_CFG,
                           ckpt=ckpt, seconds=secs)
    stages.end(f'checkpoint {ckpt}')

    stages.begin('Results: export the distilled student, predict, '
                 'compare')
    table, notes, fig_path = summarize(runs, work_dir, data_root)
    stages.end()

    print('\n' + table)
    print('\n' + notes)
    print(f'\nTotal time: {_fmt_time(time.time() - stages.start)}')
    print(f'Figure:   {fig_path}')
    print(f'Work dir: {work_dir} (data/, teacher/, distilled/, student/, '
          'summary.txt)')


if __name__ == '__main__':
    main()
