"""Numba kernels behind the fastbp API (installed as ``fastbp.kernels``).

Importing this package does not import Numba: the kernels live in submodules
(``dense``, ``softmax``, ``jacobian``, ``training``) that the API layer loads on first
use. ``codes`` holds the integer codes the kernels take instead of strings.
"""
