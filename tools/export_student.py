# Export the student of a distillation checkpoint as a plain checkpoint that
# mmseg's init_model/inference_model or mmpretrain's inference API load with
# the plain student config (written beside it with --config).
#
#   python tools/export_student.py work_dirs/x/iter_80000.pth student.pth \
#       --config configs/bdd/bdd_....py   # also writes student.py
import argparse

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
    return parser.parse_args()


def main():
    args = parse_args()
    res = export_student(args.checkpoint, args.out, args.config,
                         args.config_out)
    print(f'Student checkpoint ({res["num_tensors"]} tensors): '
          f'{res["checkpoint"]}')
    if res['config']:
        print(f'Student config: {res["config"]}')


if __name__ == '__main__':
    main()
