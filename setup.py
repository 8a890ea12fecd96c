"""mmhybrid: hybrid CNN/Transformer backbones for dense prediction on the OpenMMLab stack."""
import os.path as osp

from setuptools import find_packages, setup


def read_version():
    ns = {}
    with open(osp.join(osp.dirname(__file__), 'mmhybrid', 'version.py')) as f:
        exec(f.read(), ns)
    return ns['__version__']


def read_requirements(name):
    path = osp.join(osp.dirname(__file__), 'requirements', name)
    with open(path) as f:
        return [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]


setup(
    name='mmhybrid',
    version=read_version(),
    description='Hybrid CNN/Transformer backbones (CrossFormer, Conv2Former, Conformer, '
                'CvT, CloFormer) for mmdet and mmsegmentation',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmhybrid', 'mmhybrid.*']),
    python_requires='>=3.9',
    # torch and mmcv are installed by the Makefile (torch build choice, mmcv ops build);
    # they are listed so that pip checks them.
    install_requires=['torch>=2.1', 'mmengine>=0.10.0', 'mmcv>=2.0.0,<2.2.0'],
    extras_require={
        'det': ['mmdet>=3.1,<3.4'],
        'seg': ['mmsegmentation>=1.1,<1.3', 'ftfy', 'regex'],
        'timm': ['timm>=1.0'],  # mmhybrid.timm_models (also needs a torchvision matching torch)
        'deploy': read_requirements('deploy.txt'),  # tools/deployment/export_onnx.py, tools/test.py FILE.onnx
        'tests': read_requirements('tests.txt'),
    },
    license='Apache License 2.0',
    zip_safe=False,
)
