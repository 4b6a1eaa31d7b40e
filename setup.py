"""Package list for setuptools: the repository root is the package `imcc`, so its subpackages
are found under `.` and prefixed (pyproject.toml's `packages.find` cannot add a prefix)."""

from setuptools import find_packages, setup

SUBPACKAGES = find_packages(
    ".",
    exclude=[
        "tests",
        "tests.*",
        "benchmarks",
        "benchmarks.*",
        "scripts",
        "build",
        "build.*",
        "dist",
    ],
)

setup(package_dir={"imcc": "."}, packages=["imcc", *(f"imcc.{name}" for name in SUBPACKAGES)])
