# Test a model (a distiller or any OpenMMLab model) from a config and a
# checkpoint. Same arguments as mmseg's / mmpretrain's tools/test.py.
import argparse
import os
import os.path as osp

import torch

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmrankkd  # noqa: F401  (registers modules, weights-only allow-list)
from mmrankkd.engine import (check_run_config, close_distributed,
                             revert_sync_bn_for_cpu, setup_cpu_distributed)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Test a model (e.g. an mmrankkd distiller)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out', help='dump the predictions to this pickle file (metric '
        'DumpResults), as mmpretrain does')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.out is not None:
        evaluator = cfg.test_evaluator
        evaluator = list(evaluator) if isinstance(evaluator, list) \
            else [evaluator]
        evaluator.append(dict(type='DumpResults', out_file_path=args.out))
        cfg.test_evaluator = evaluator

    check_run_config(cfg)
    setup_cpu_distributed(cfg)  # torchrun on CPU-only machines
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    if not torch.cuda.is_available() and not runner.distributed:
        runner.model = revert_sync_bn_for_cpu(runner.model)
    runner.test()
    close_distributed()


if __name__ == '__main__':
    main()
