"""Results of repeated runs: read them from mmengine's logs, compare them
with the published number a config names, and write the table and figure.

Used by ``tools/run_table.py``; kept here so that it can be tested and
reused without launching anything.

* :func:`read_run` reads one run's validation metric from every
  ``<run>/<timestamp>/vis_data/scalars.json`` (a resumed run has several;
  a later one replaces an earlier one's records of the same step) and
  returns the best and the last value.
* :func:`read_published` reads the published number from the config's own
  header comment, ``Published top-1: 73.33 (source).`` or ``Published
  mIoU: 75.54 (source).`` (``76.31±0.19`` for mean ± std); configs without
  one have no published number.
* :func:`summarize`, :func:`write_markdown` and :func:`write_figure` make
  ``table.md`` and ``table.png``.
"""
import glob
import json
import math
import os.path as osp
import re
import statistics
from typing import Dict, List, Optional

# Validation metrics, in the order they are looked for in a run's logs
# (classification top-1, then segmentation mIoU). The teacher's score is
# logged as ``teacher/<metric>`` and is never taken for the student's.
METRICS = ('accuracy/top1', 'mIoU')

_PUBLISHED = re.compile(
    r'Published (?P<metric>top-1|mIoU):\s*'
    r'(?P<rest>.*?)(?:\.\s|\.$|$)', re.S)
_NUMBER = re.compile(
    r'^\(?(?P<value>\d+(?:\.\d+)?)\s*(?:(?:±|\+-|\+/-)\s*'
    r'(?P<std>\d+(?:\.\d+)?))?\)?\s*(?:\((?P<source>.*)\))?\s*$', re.S)


class RunLogError(ValueError):
    """A run's logs cannot give the numbers the table needs."""


def header_comment(config_path: str) -> str:
    """The leading comment block of a config file as one line of text
    (``#`` markers dropped, lines joined by spaces)."""
    lines = []
    with open(config_path, encoding='utf-8') as f:
        for line in f:
            stripped = line.strip()
            if not stripped.startswith('#'):
                if stripped:
                    break
                continue
            lines.append(stripped.lstrip('#').strip())
    return ' '.join(line for line in lines if line)


def read_published(config_path: str) -> dict:
    """The published number a config's header comment names.

    Returns:
        dict: ``metric`` ('top-1' / 'mIoU' or None), ``value`` and ``std``
        (floats or None), ``source`` (text or None) and ``text`` (what the
        comment says, e.g. "not in DIST_KD's README table").
    """
    found = _PUBLISHED.search(header_comment(config_path))
    out = dict(metric=None, value=None, std=None, source=None, text=None)
    if found is None:
        return out
    rest = found.group('rest').strip()
    out.update(metric=found.group('metric'), text=rest)
    number = _NUMBER.match(rest)
    if number:
        out['value'] = float(number.group('value'))
        if number.group('std'):
            out['std'] = float(number.group('std'))
        out['source'] = number.group('source')
    return out


def _val_records(path: str, metric: str) -> Dict[int, float]:
    records = {}
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                # A run killed while writing leaves a partial last line.
                continue
            if metric in entry and 'step' in entry:
                records[int(entry['step'])] = float(entry[metric])
    return records


def scalar_files(run_dir: str) -> List[str]:
    """``<run_dir>/<timestamp>/vis_data/scalars.json``, oldest first."""
    return sorted(glob.glob(osp.join(run_dir, '*', 'vis_data',
                                     'scalars.json')))


def find_metric(run_dir: str) -> Optional[str]:
    """The first of :data:`METRICS` that the run's logs hold."""
    for metric in METRICS:
        for path in scalar_files(run_dir):
            if _val_records(path, metric):
                return metric
    return None


def read_run(run_dir: str, metric: Optional[str] = None,
             final_step: Optional[int] = None) -> dict:
    """Best and last validation value of one run.

    Args:
        run_dir (str): The run's work dir.
        metric (str, optional): Key in ``scalars.json``. Defaults to the
            first of :data:`METRICS` found.
        final_step (int, optional): The step (epoch, or iteration for
            iteration-based training) the last value must come from. When
            given and not logged, :class:`RunLogError` is raised.

    Returns:
        dict: ``metric``, ``best``, ``best_step``, ``last``, ``last_step``,
        ``steps`` (step -> value, resumed logs merged) and ``logs`` (the
        scalars.json files read).
    """
    files = scalar_files(run_dir)
    if not files:
        raise RunLogError(
            f'{run_dir} has no <timestamp>/vis_data/scalars.json. Fix: keep '
            "mmengine's LocalVisBackend in the config's visualizer "
            '(vis_backends), which writes it.')
    metric = metric or find_metric(run_dir)
    if metric is None:
        raise RunLogError(
            f'{run_dir}: no validation record with any of '
            f'{", ".join(METRICS)} in {", ".join(files)}. Fix: validate '
            'during training (train_cfg.val_interval) or name the metric '
            'with --metric.')
    steps: Dict[int, float] = {}
    for path in files:  # a resumed run's later log replaces repeated steps
        steps.update(_val_records(path, metric))
    if not steps:
        raise RunLogError(f'{run_dir}: no "{metric}" record in '
                          f'{", ".join(files)}.')
    last_step = max(steps)
    if final_step is not None and last_step != final_step:
        raise RunLogError(
            f'{run_dir}: the last "{metric}" record is at step {last_step}, '
            f'not at the final step {final_step}. Fix: let the run finish '
            '(rerun the same command: it resumes, and with ExactResumeHook '
            'in the config a run stopped during its final validation is '
            'validated).')
    best_step = max(steps, key=lambda s: (steps[s], -s))
    return dict(metric=metric, best=steps[best_step], best_step=best_step,
                last=steps[last_step], last_step=last_step,
                steps=dict(sorted(steps.items())), logs=files)


def mean_std(values: List[float]) -> tuple:
    """Mean and sample standard deviation (n - 1; NaN for one value)."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return mean, std


def _fmt(mean: float, std: float) -> str:
    if math.isnan(std):
        return f'{mean:.2f}'
    return f'{mean:.2f} ± {std:.2f}'


def summarize(row: dict) -> dict:
    """Add the means, standard deviations and the difference (mean best -
    published) to a row with ``runs`` (list of :func:`read_run` results)
    and ``published`` (:func:`read_published`)."""
    runs = row['runs']
    out = dict(row)
    if runs:
        out['best_mean'], out['best_std'] = mean_std([r['best']
                                                      for r in runs])
        out['last_mean'], out['last_std'] = mean_std([r['last']
                                                      for r in runs])
        value = row['published']['value']
        out['difference'] = (None if value is None else out['best_mean'] -
                             value)
    else:
        out.update(best_mean=None, best_std=None, last_mean=None,
                   last_std=None, difference=None)
    return out


def _published_cell(published: dict) -> str:
    if published['value'] is None:
        return '-'
    value = f'{published["value"]:.2f}'
    if published['std'] is not None:
        value += f' ± {published["std"]:.2f}'
    if published['source']:
        value += f' ({published["source"]})'
    return value


MARKDOWN_HEADER = ('| pair | loss | config | published | ours best '
                   '(mean ± std) | ours last (mean ± std) | difference '
                   '(best - published) | runs |')


def markdown_rows(rows: List[dict]) -> List[str]:
    """One table line per summarised row."""
    lines = []
    for row in rows:
        ok = bool(row['runs'])
        cells = [
            row['pair'], row['loss'], f'`{row["config_name"]}`',
            _published_cell(row['published']),
            _fmt(row['best_mean'], row['best_std']) if ok else '-',
            _fmt(row['last_mean'], row['last_std']) if ok else '-',
            (f'{row["difference"]:+.2f}' if row['difference'] is not None
             else '-'),
            f'{len(row["runs"])}/{row["requested"]}',
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def write_markdown(path: str, rows: List[dict], notes: List[str] = ()):
    """Write ``table.md``: one section per metric (top-1, mIoU)."""
    text = []
    for metric in sorted({r['metric_label'] for r in rows}):
        text += [f'## {metric}', '', MARKDOWN_HEADER,
                 '|---|---|---|---:|---:|---:|---:|---:|']
        text += markdown_rows([r for r in rows
                               if r['metric_label'] == metric])
        text.append('')
    text += [
        'ours best: each run\'s best validation value over its epochs '
        '(what RepDistiller and mdistiller report); ours last: its value '
        'at the final epoch / iteration. mean ± std over the finished runs '
        '(sample standard deviation, n - 1); difference: ours best mean - '
        'published; runs: finished / requested. The published number is '
        'the one the config\'s header comment names (and its source).',
        '',
    ]
    text += list(notes)
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(text).rstrip('\n') + '\n')
    return path


def write_figure(path: str, rows: List[dict]):
    """Write ``table.png``: one panel per pair; per loss the runs' best
    values as points, their mean ± std as a bar, the published number as a
    red cross (± its std where published)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    pairs = []
    for row in rows:
        if row['pair'] not in pairs:
            pairs.append(row['pair'])
    cols = min(3, len(pairs)) or 1
    nrows = math.ceil(len(pairs) / cols) or 1
    fig, axes = plt.subplots(nrows, cols, figsize=(5.5 * cols, 3.6 * nrows),
                             squeeze=False)
    for ax, pair in zip(axes.flat, pairs):
        prow = [r for r in rows if r['pair'] == pair]
        for x, row in enumerate(prow):
            values = [r['best'] for r in row['runs']]
            if values:
                jitter = [x - 0.12 + 0.24 * i / max(len(values) - 1, 1)
                          for i in range(len(values))]
                ax.scatter(jitter, values, s=14, color='tab:blue',
                           alpha=0.6, zorder=3,
                           label='our runs (best)' if x == 0 else None)
                std = 0.0 if math.isnan(row['best_std']) else row['best_std']
                ax.errorbar([x + 0.25], [row['best_mean']], yerr=[std],
                            fmt='o', color='tab:blue', capsize=4,
                            label='ours mean ± std' if x == 0 else None)
            pub = row['published']
            if pub['value'] is not None:
                ax.errorbar([x + 0.25], [pub['value']],
                            yerr=[pub['std'] or 0.0], fmt='x',
                            color='tab:red', markersize=9, capsize=4,
                            zorder=4, label='published')
        ax.set_xticks(range(len(prow)))
        ax.set_xticklabels([r['loss'] for r in prow], rotation=30)
        ax.set_title(pair, fontsize=10)
        ax.set_ylabel(prow[0]['metric_label'] + ' (%)')
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=7)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
