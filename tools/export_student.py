# Export the student of a distillation checkpoint as a plain checkpoint that
# mmseg's init_model/inference_model or mmpretrain's inference API load with
# the plain student config (written beside it with --config).
#
#   python tools/export_student.py work_dirs/x/iter_80000.pth student.pth \
#       --config configs/bdd/bdd_....py   # also writes student.py
#       [--cfg-options test_dataloader.dataset.data_root=data/x ...]
#
# Pass the same --cfg-options as to tools/train.py (data_root, ...) so the
# written student config holds what training used.
import argparse

from mmengine.config import DictAction

import mmrankkd  # noqa: F401
from mmrankkd.engine.export import export_student


def parse_args():
    parser = argparse.ArgumentParser(
        description='Export the student of an mmrankkd checkpoint')
    parser.add_argument('checkpoint', help='distillation checkpoint')
    parser.add_argument('out', help='student checkpoint to write')
    parser.add_argument(
        '--config',
        help='the distillation config; writes the plain student config too')
    parser.add_argument(
        '--config-out',
        help='where to write the student config (default: <out>.py)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of --config before the student config is '
        'written, as in tools/train.py: key=value pairs, e.g. '
        'test_dataloader.dataset.data_root=data/x')
    return parser.parse_args()


def main():
    args = parse_args()
    if args.cfg_options and not args.config:
        raise SystemExit('--cfg-options change the written student config: '
                         'pass --config CONFIG too')
    res = export_student(args.checkpoint, args.out, args.config,
                         args.config_out, args.cfg_options)
    print(f'Student checkpoint ({res["num_tensors"]} tensors): '
          f'{res["checkpoint"]}')
    if res['config']:
        print(f'Student config: {res["config"]}')


if __name__ == '__main__':
    main()
