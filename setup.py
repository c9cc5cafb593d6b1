import os.path as osp

from setuptools import find_packages, setup


def get_version():
    namespace = {}
    with open(osp.join(osp.dirname(__file__), 'mmrankkd', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='mmrankkd',
    version=get_version(),
    description='Logit knowledge distillation for OpenMMLab (MMEngine, '
    'MMSegmentation, MMPretrain) as a config change',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmrankkd', 'mmrankkd.*']),
    python_requires='>=3.8',
    install_requires=[
        # torch.is_autocast_enabled(device_type) (the losses) needs 2.4.
        'torch>=2.4',
        'mmengine>=0.10.7',
        # The range mmsegmentation 1.2.x accepts; full mmcv (compiled ops).
        'mmcv>=2.0.0rc4,<2.2.0',
        'mmsegmentation>=1.2.2',
        'mmpretrain>=1.2.0',
        'opencv-python',
        'ftfy',
        'regex',
    ],
    extras_require={
        'tests': ['pytest', 'scipy'],
        'demo': ['matplotlib'],
        # mmseg's Mask2Former / MaskFormer heads are mmdet's.
        'mmdet': ['mmdet>=3.3.0'],
    },
    license='Apache License 2.0',
    zip_safe=False)
