"""Installs `spillover-lm-eval.pth` beside the package (wheel and editable installs alike).

The .pth file imports `spillover.harness.hook` at interpreter start, which registers spillover's lm-eval
model (`lm_eval --model spillover`) for lm-eval releases that do not read the `lm_eval.models` entry point
declared in pyproject.toml. Everything else about the build is in pyproject.toml.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "spillover-lm-eval.pth"


class BuildPyWithPth(build_py):
    """Copies src/spillover-lm-eval.pth to the top of the wheel: build_lib for a wheel, the unpacked
    editable wheel (`install_lib`) for `pip install -e`."""

    def run(self) -> None:
        super().run()
        root = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        self.copy_file(os.path.join("src", PTH), os.path.join(root, PTH))


setup(cmdclass={"build_py": BuildPyWithPth})
