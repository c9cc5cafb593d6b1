"""The CIFAR-100 pair configs (configs/cifar100/*_1xb64_cifar100.py): they
are the generator's output, load with mmengine, carry the CRD recipe and
their authors' loss settings, build, and train one iteration (plus
validation with the teacher) on a tiny synthetic CIFAR-100 read by
mmpretrain's own CIFAR100.

One iteration of resnet32x4 -> resnet8x4 KD and DKD and of vgg13 ->
MobileNetV2 PLD run by default; every other loss x pair config is marked
``slow`` and ``matrix`` (the default run leaves ``matrix`` out; run them
with ``pytest -m slow tests/test_cifar_recipes.py``)."""
import importlib.util
import itertools
import math
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from conftest import REPO

_spec = importlib.util.spec_from_file_location(
    'gen_cifar100_configs', REPO / 'tools' / 'gen_cifar100_configs.py')
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

MODELS_DIR = REPO / 'configs' / 'cifar100' / '_base_' / 'models'
PAIRS = [(p['teacher'], p['student']) for p in gen.PAIRS]
LOSS_CONFIGS = [(loss, p['teacher'], p['student'])
                for loss, p in gen.loss_items()]
DEFAULT_RUNS = [('kd', 'resnet32x4', 'resnet8x4'),
                ('dkd', 'resnet32x4', 'resnet8x4'),
                ('pld', 'vgg13', 'MobileNetV2'),
                ('mlkd', 'resnet32x4', 'resnet8x4'),
                ('ctkd', 'resnet56', 'resnet20')]
_RUN_IDS = itertools.count()


# Published settings, written here (not read from the generator):
# mdistiller configs/cifar100/dkd/*.yaml SOLVER.LR and DKD.BETA (8.0 where
# the yaml leaves CFG.DKD.BETA's default), the same LR as CRD's
# train_student.py (0.01 for MobileNetV2 / ShuffleNet students).
PUBLISHED = {
    ('resnet56', 'resnet20'): dict(lr=0.05, dkd_beta=2.0),
    ('resnet110', 'resnet32'): dict(lr=0.05, dkd_beta=2.0),
    ('resnet32x4', 'resnet8x4'): dict(lr=0.05, dkd_beta=8.0),
    ('wrn_40_2', 'wrn_16_2'): dict(lr=0.05, dkd_beta=6.0),
    ('wrn_40_2', 'wrn_40_1'): dict(lr=0.05, dkd_beta=6.0),
    ('vgg13', 'vgg8'): dict(lr=0.05, dkd_beta=6.0),
    ('vgg13', 'MobileNetV2'): dict(lr=0.01, dkd_beta=6.0),
    ('ResNet50', 'MobileNetV2'): dict(lr=0.01, dkd_beta=8.0),
    ('resnet32x4', 'ShuffleV1'): dict(lr=0.01, dkd_beta=8.0),
    ('resnet32x4', 'ShuffleV2'): dict(lr=0.01, dkd_beta=8.0),
    ('wrn_40_2', 'ShuffleV1'): dict(lr=0.01, dkd_beta=8.0),
}
# Both: SGD, momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, LR x0.1
# at epochs 150, 180, 210.
RECIPE = dict(momentum=0.9, weight_decay=5e-4, batch_size=64, epochs=240,
              milestones=[150, 180, 210], gamma=0.1)


def config_path(loss, teacher, student):
    return Path(gen.loss_path(loss, dict(teacher=teacher, student=student)))


def _ids(item):
    return '-'.join(item)


def _need_zoo(*archs):
    missing = [a for a in archs if not (MODELS_DIR / f'{a}.py').is_file()]
    if missing:
        pytest.skip('CIFAR model zoo config(s) not there yet: ' + ', '.join(
            f'configs/cifar100/_base_/models/{a}.py' for a in missing))


# ------------------------------------------------------------ generator
def test_committed_configs_are_the_generators_output():
    files = gen.render_all()
    assert gen.differences(files) == [], (
        'configs/cifar100 differ from tools/gen_cifar100_configs.py; run '
        'python tools/gen_cifar100_configs.py')
    on_disk = {str(p) for p in (REPO / 'configs' / 'cifar100').glob(
        '*_1xb64_cifar100.py')} | {str(p) for p in (
            REPO / 'configs' / 'cifar100' / '_base_').glob(
                'distill_*_1xb64_cifar100.py')}
    stale = sorted(on_disk - set(files))
    assert not stale, f'configs no longer generated: {stale}'
    assert len(files) == len(PAIRS) + len(LOSS_CONFIGS) == 144
    # Every pair has every loss but TTM/WTTM (public settings: one pair).
    assert len(LOSS_CONFIGS) == len(PAIRS) * (len(gen.LOSSES) - 2) + 1


def test_generator_check_mode(capsys):
    assert gen.main(['--check']) == 0


# ------------------------------------------------------------ settings
@pytest.mark.parametrize('item', LOSS_CONFIGS, ids=_ids)
def test_config_loads_with_recipe_and_settings(item):
    loss, teacher, student = item
    _need_zoo(teacher, student)
    path = config_path(*item)
    cfg = Config.fromfile(str(path))
    text = path.read_text()
    # Sources and the checkpoint are named at the top.
    assert 'Teacher checkpoint' in text and 'Published top-1' in text
    model = cfg.model
    assert model.type == 'mmrankkd.LogitDistiller'
    assert 'mmrankkd' in cfg.custom_imports.imports
    assert model.teacher == str(MODELS_DIR / f'{teacher}.py')
    assert model.teacher_ckpt == f'checkpoints/crd/{teacher}_vanilla.pth'
    student_cfg = Config.fromfile(str(MODELS_DIR / f'{student}.py')).model
    assert model.student.backbone == student_cfg.backbone
    assert model.student.data_preprocessor == student_cfg.data_preprocessor
    # The CRD recipe.
    assert cfg.train_dataloader.batch_size == RECIPE['batch_size']
    assert cfg.train_dataloader.dataset.type == 'CIFAR100'
    assert cfg.train_dataloader.dataset.data_root == 'data/cifar100'
    pipeline = cfg.train_dataloader.dataset.pipeline
    mlkd = gen.MLKD[next(p['dkd_cfg'] for p in gen.PAIRS if (
        p['teacher'], p['student']) == (teacher, student))]
    if loss.startswith('mlkd'):  # weak and strong views (MLKD's code)
        assert [t['type'] for t in pipeline] == ['MultiView', 'PackInputs']
        weak, strong = pipeline[0].transforms
        assert pipeline[0].num_views == [1, 1]
        assert strong == weak + [dict(type='mmrankkd.MLKDRandAugment')]
        assert [t['type'] for t in pipeline[:1] + weak] == [
            'MultiView', 'RandomCrop', 'RandomFlip']
        assert weak[0].padding == 4
    else:
        # CRD's crop + flip, recording each sample's view (teacher store);
        # the same draws and pixels as RandomCrop / RandomFlip.
        assert [t['type'] for t in pipeline] == [
            'mmrankkd.ViewRandomCrop', 'mmrankkd.ViewRandomFlip',
            'PackInputs']
        assert pipeline[0].padding == 4
        assert {'sample_idx', 'teacher_view'} <= set(pipeline[2].meta_keys)
    assert cfg.get('data_preprocessor') is None  # the student's (CRD)
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.momentum, opt.weight_decay) == (
        'SGD', RECIPE['momentum'], RECIPE['weight_decay'])
    if loss == 'mlkd':  # the MLKD authors' own schedules
        assert (opt.lr, cfg.train_cfg.max_epochs) == (mlkd['lr'],
                                                      mlkd['epochs'])
    elif loss == 'mlkd-ls':
        assert (opt.lr, cfg.train_cfg.max_epochs) == (mlkd['ls_lr'],
                                                      mlkd['ls_epochs'])
    else:
        assert opt.lr == PUBLISHED[(teacher, student)]['lr']
        assert cfg.train_cfg.max_epochs == RECIPE['epochs']
    assert cfg.param_scheduler.milestones == RECIPE['milestones']
    assert cfg.param_scheduler.gamma == RECIPE['gamma']
    assert cfg.val_cfg.type == 'mmrankkd.DistillValLoop'
    # The losses.
    losses = model.distill_losses
    ce = model.student.head.loss.loss_weight
    hooks = cfg.get('custom_hooks', [])
    # Every run keeps its random generator states for an exact --resume.
    assert hooks[0] == dict(type='mmrankkd.ExactResumeHook')
    # ... and reads the losses' deferred value checks at every boundary.
    assert hooks[1] == dict(type='mmrankkd.ValueCheckHook')
    hooks = hooks[2:]
    if loss == 'kd':
        assert ce == 0.1
        assert dict(losses) == dict(loss_kd=dict(
            type='mmrankkd.KDLoss', temperature=4.0, loss_weight=0.9))
    elif loss == 'dkd':
        assert ce == 1.0
        assert (losses.loss_dkd.alpha, losses.loss_dkd.beta,
                losses.loss_dkd.temperature) == (
                    1.0, PUBLISHED[(teacher, student)]['dkd_beta'], 4.0)
    elif loss == 'dist':
        assert ce == 1.0
        d = losses.loss_dist
        assert (d.beta, d.gamma, d.temperature, d.loss_weight) == (
            1.0, 1.0, 4.0, 2.0)
    elif loss == 'rkkd-kd':
        assert ce == 0.1
        assert losses.loss_kd.loss_weight == losses.loss_rank.loss_weight
        assert (losses.loss_rank.surrogate,
                losses.loss_rank.steepness) == ('tanh', 100.0)
    elif loss == 'bdd':
        b = losses.loss_bdd
        assert ce == 0.1
        assert (b.forward_temperature, b.reverse_temperature) == (4.0, 4.0)
    elif loss == 'cmkd':
        assert losses.loss_cmkd.temperature == 4.0
    elif loss == 'pld':
        assert model.student_task_loss is False
        assert losses.loss_pld.teacher_temperature == 4.0
    elif loss == 'mlkd':
        assert ce == 0.1
        assert dict(losses) == dict(loss_mlkd=dict(
            type='mmrankkd.MLKDLoss', temperatures=(4.0, 3.0, 5.0, 2.0, 6.0),
            loss_weight=0.9))
    elif loss == 'mlkd-ls':
        assert ce == 0.1
        assert dict(losses) == dict(loss_mlkd=dict(
            type='mmrankkd.MLKDLoss', temperatures=(2.0, 3.0, 5.0, 2.0, 6.0),
            logit_standardization=True,
            loss_weight=float(mlkd['ls_weight'])))
    elif loss == 'kd-ls':
        temperature, weight, _ = gen.LS_SETTINGS[(teacher, student)]['kd']
        assert ce == 0.1
        assert dict(losses) == dict(loss_kd=dict(
            type='mmrankkd.KDLoss', temperature=temperature,
            loss_weight=weight, logit_standardization=True))
    elif loss == 'dkd-ls':
        temperature, weight, beta, _ = gen.LS_SETTINGS[(teacher,
                                                        student)]['dkd']
        d = losses.loss_dkd
        assert ce == 1.0 and d.logit_standardization is True
        assert (d.alpha, d.beta, d.temperature) == (weight, beta * weight,
                                                    temperature)
    elif loss == 'ctkd':
        assert ce == 0.1
        assert dict(losses) == dict(loss_ctkd=dict(
            type='mmrankkd.CTKDLoss', t_start=1.0, t_end=20.0,
            loss_weight=0.9))
        assert hooks == [dict(type='mmrankkd.CTKDScheduleHook',
                              decay_loops=10, decay_max=0.0,
                              decay_min=-1.0)]
    elif loss == 'ttm':
        assert (teacher, student, ce) == ('vgg13', 'vgg8', 1.0)
        assert dict(losses) == dict(loss_ttm=dict(
            type='mmrankkd.TTMLoss', gamma=0.1, loss_weight=45.0))
    if loss in ('dkd', 'dkd-ls'):
        assert hooks == [dict(
            type='mmrankkd.DistillLossWeightScheduleHook',
            losses=['loss_dkd'], warmup=20, by_epoch=True)]
    elif loss != 'ctkd':
        assert not hooks
    assert model.get('student_task_loss', True) is (loss != 'pld')


def test_every_generated_pair_has_published_settings():
    assert sorted(PAIRS) == sorted(PUBLISHED)


# ------------------------------------------------------------ building
def _save_teacher(teacher, directory):
    """A randomly initialised teacher's state dict (the tests' stand-in
    for the converted CRD checkpoint)."""
    from mmengine.registry import MODELS
    path = Path(directory) / f'{teacher}_random.pth'
    if not path.is_file():
        cfg = Config.fromfile(str(MODELS_DIR / f'{teacher}.py'))
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            model = MODELS.build(cfg.model)
        torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope='module')
def ckpt_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('crd_teachers')


@pytest.mark.parametrize('pair', PAIRS, ids=_ids)
def test_pair_builds(pair, ckpt_dir):
    teacher, student = pair
    _need_zoo(teacher, student)
    from mmrankkd.registry import MODELS
    cfg = Config.fromfile(str(config_path('kd', teacher, student)))
    cfg.model.teacher_ckpt = _save_teacher(teacher, ckpt_dir)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    assert sorted(model.distill_losses.keys()) == ['loss_kd']
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32), mode='tensor')
    assert out.shape == (2, 100)


# ------------------------------------------------------------ training
@pytest.fixture(scope='module')
def cifar_root(tmp_path_factory):
    from mmrankkd.datasets.synthetic_cifar import make_synthetic_cifar100
    root = tmp_path_factory.mktemp('cifar')
    return make_synthetic_cifar100(str(root), num_train=4, num_test=4)


def _one_iteration(item, root, ckpt_dir, work_dir):
    """Train ``item``'s config for one iteration of 4 images and validate
    on 4, as the config is except for data size, workers and the teacher
    checkpoint."""
    from mmengine.runner import Runner

    from mmrankkd.datasets.synthetic_cifar import disable_cifar100_md5_check
    loss, teacher, student = item
    _need_zoo(teacher, student)
    cfg = Config.fromfile(str(config_path(*item)))
    loader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                  dataset=dict(data_root=root))
    cfg.merge_from_dict(dict(
        train_dataloader=loader, val_dataloader=loader,
        test_dataloader=loader, train_cfg=dict(max_epochs=1),
        default_hooks=dict(logger=dict(interval=1),
                           checkpoint=dict(interval=1)),
        randomness=dict(seed=0),
        model=dict(teacher_ckpt=_save_teacher(teacher, ckpt_dir))))
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'cifar_recipe_{next(_RUN_IDS)}'
    with disable_cifar100_md5_check():
        runner = Runner.from_cfg(cfg)
        runner.train()
    # The optimizer and schedule the runner built: the published ones.
    group = runner.optim_wrapper.optimizer.param_groups[0]
    lr = PUBLISHED[(teacher, student)]['lr']
    if item[0].startswith('mlkd'):  # the MLKD authors' own lr
        pair_cfg = next(p['dkd_cfg'] for p in gen.PAIRS
                        if (p['teacher'], p['student']) == (teacher, student))
        lr = gen.MLKD[pair_cfg]['ls_lr' if item[0] == 'mlkd-ls' else 'lr']
    assert type(runner.optim_wrapper.optimizer) is torch.optim.SGD
    assert (group['initial_lr'], group['lr'], group['momentum'],
            group['weight_decay']) == (lr, lr,
                                       RECIPE['momentum'],
                                       RECIPE['weight_decay'])
    scheduler, = runner.param_schedulers
    assert sorted(scheduler.milestones.elements()) == RECIPE['milestones']
    assert scheduler.gamma == RECIPE['gamma']
    log = '\n'.join(p.read_text() for p in Path(work_dir).glob('*/*.log'))
    train = [line for line in log.splitlines() if 'Epoch(train)' in line]
    assert len(train) == 1, 'expected exactly one training iteration'
    for name in cfg.model.distill_losses:
        value = re.search(rf'distill\.{name}: (\S+)', train[0])
        assert value and torch.isfinite(torch.tensor(float(value[1]))), name
    val = [line for line in log.splitlines()
           if 'Epoch(val)' in line and 'accuracy/top1' in line]
    assert val and 'agreement/top1' in val[-1] and \
        'teacher/accuracy/top1' in val[-1]
    return runner, train[0]


DEFAULT_IDS = {_ids(i) for i in DEFAULT_RUNS}


@pytest.mark.parametrize('item', [
    pytest.param(i, marks=() if _ids(i) in DEFAULT_IDS else (
        pytest.mark.slow, pytest.mark.matrix))
    for i in LOSS_CONFIGS
], ids=_ids)
def test_one_training_iteration(item, cifar_root, ckpt_dir, tmp_path):
    runner, train = _one_iteration(item, cifar_root, ckpt_dir, tmp_path)
    if item[0] == 'dkd':
        # First epoch of mdistiller's 20-epoch warm-up: 1/20 of weight 1.
        assert runner.message_hub.get_scalar(
            'train/distill_weight.dkd').current() == pytest.approx(0.05)
        assert 'distill_weight.dkd: 0.0500' in train
    else:
        assert 'distill_weight' not in train
    if item[0].startswith('mlkd'):  # the student's CE on the strong view
        assert 'cls.strong.loss' in train
    if item[0] == 'ctkd':
        # Epoch 1 of CTKD's cosine curriculum; T logged; theta trained.
        hub = runner.message_hub
        assert hub.get_scalar('train/ctkd_lambda.ctkd').current() == \
            pytest.approx((math.cos(math.pi / 10) + 1) / 2 - 1)
        assert 'ctkd_lambda.ctkd: -0.0245' in train
        assert 'ctkd_temperature.ctkd: 15.62' in train  # 1 + 20 sigmoid(1)
        theta = runner.model.distill_losses['loss_ctkd'].global_t
        assert theta.item() != 1.0


NEW_KINDS = [('kd-ls', 'resnet32x4', 'resnet8x4'),
             ('dkd-ls', 'vgg13', 'vgg8'),
             ('ctkd', 'resnet56', 'resnet20'),
             ('ttm', 'vgg13', 'vgg8')]


@pytest.mark.parametrize('item', NEW_KINDS, ids=_ids)
def test_new_kinds_build_through_the_runner(item, ckpt_dir, tmp_path):
    """The settings land in the built losses, hooks and optimizer."""
    from mmengine.runner import Runner
    loss, teacher, student = item
    _need_zoo(teacher, student)
    cfg = Config.fromfile(str(config_path(*item)))
    cfg.model.teacher_ckpt = _save_teacher(teacher, ckpt_dir)
    cfg.work_dir = str(tmp_path)
    cfg.experiment_name = f'cifar_recipe_{next(_RUN_IDS)}'
    runner = Runner.from_cfg(cfg)
    losses = runner.model.distill_losses
    hooks = {type(h).__name__: h for h in runner.hooks}
    if loss in ('kd-ls', 'dkd-ls'):
        built = losses['loss_kd' if loss == 'kd-ls' else 'loss_dkd']
        assert built.logit_standardization is True
        key = 'kd' if loss == 'kd-ls' else 'dkd'
        assert built.temperature == gen.LS_SETTINGS[(teacher,
                                                     student)][key][0]
    if loss == 'dkd-ls':
        assert (built.alpha, built.beta) == (15.0, 30.0)  # vgg13 -> vgg8
        assert hooks['DistillLossWeightScheduleHook'].warmup == 20
    if loss == 'ttm':
        assert (losses['loss_ttm'].gamma, losses['loss_ttm'].weighted,
                losses['loss_ttm'].loss_weight) == (0.1, False, 45.0)
    if loss == 'ctkd':
        built = losses['loss_ctkd']
        assert (built.t_start, built.t_end, built.loss_weight) == (1.0, 20.0,
                                                                   0.9)
        hook = hooks['CTKDScheduleHook']
        assert (hook.decay_loops, hook.decay_max, hook.decay_min) == (
            10, 0.0, -1.0)
        # theta is trained by the student's SGD, as the authors' one SGD.
        optim = runner.build_optim_wrapper(cfg.optim_wrapper).optimizer
        group = next(g for g in optim.param_groups
                     if any(p is built.global_t for p in g['params']))
        assert (group['lr'], group['momentum'], group['weight_decay']) == (
            0.05, 0.9, 5e-4)
