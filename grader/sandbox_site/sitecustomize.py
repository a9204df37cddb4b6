"""Loaded at start-up by every graded kernel (and nothing else): offline datasets.

``keras.datasets.mnist.load_data()`` checks the file it finds in ``~/.keras/datasets``
against the full MNIST's hash and, on a mismatch, deletes it and downloads again, which
cannot work offline with the grader's 5,000-image sample. This hook makes
``load_data`` read the cached file when it is there, so idiomatic student code works
in the sandbox. Outside graded kernels nothing changes.
"""

import importlib.abc
import importlib.machinery
import os
import sys

_PATCHED = "keras.src.datasets.mnist"


def _offline_load_data(original):
    def load_data(path="mnist.npz"):
        cached = os.path.join(os.path.expanduser("~"), ".keras", "datasets", path)
        if os.path.isfile(cached):
            import numpy as np

            with np.load(cached, allow_pickle=False) as data:
                return (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])
        return original(path)

    load_data.__doc__ = original.__doc__
    load_data.__wrapped__ = original
    return load_data


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        module.load_data = _offline_load_data(module.load_data)


class _DatasetFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != _PATCHED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader)
        return spec


sys.meta_path.insert(0, _DatasetFinder())
