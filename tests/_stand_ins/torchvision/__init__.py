"""A stand-in for torchvision, for prunus's tests and benchmarks only (never imported by prunus).

timm imports a few torchvision names when it is imported. The registry's torchvision wheels are
linked against the CUDA build of torch, so on a machine with the CPU torch they fail to load
(`libc10_cuda.so` missing). `tests/conftest.py` and `benchmarks/coverage_timm.py` put this folder
on `sys.path` only when no working torchvision can be imported.

What it provides, and nothing more: `torchvision.ops.misc.FrozenBatchNorm2d` (a working copy: timm
builds models with it), and the names `timm.data` touches at import time (`transforms` classes,
`transforms.functional`, `InterpolationMode`, `datasets` classes); those raise when used, since
prunus neither needs nor tests timm's data pipeline.
"""

__version__ = "0.0.0+prunus.stand.in"
