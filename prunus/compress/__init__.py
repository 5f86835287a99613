"""DE compression: directed-evolution sparsification, per-layer quantization, entropy-coded .prn files.

Modules, one job each:

- `search`: the DE search (directed pool, elitist population with the magnitude set, crossover,
  mutation, elite re-scored on a larger batch); `runner`: prefix-once / suffix-many evaluation
  with all candidates of a generation in one batched matmul;
- `quantize`: uniform and k-means codebooks at 2-8 bits (pure functions); `bits`: greedy bit
  allocation under a KL or accuracy budget;
- `codec`: ANS coding of masks and codebook indices (`constriction`); `pack`: model <-> file
  contents; `prn`: the .prn container (safetensors + one versioned JSON header), read defensively;
- `baselines`: generic compressors and Deep-Compression-style coding; `report`: the numbers;
- `api`: `compress`, `decompress`; `config`: `CompressConfig`.

This package does not use the training engine: fine-tuning around compression is a pipeline's job
(an optional short distillation of the survivors lives in `api.distill`).

Example:
    >>> from prunus.compress import CompressConfig
    >>> CompressConfig(sparsity=0.9, bits=4).sparsity
    0.9
"""

from prunus.compress.api import compress as compress
from prunus.compress.api import decompress as decompress
from prunus.compress.api import load as load
from prunus.compress.config import CompressConfig as CompressConfig
from prunus.compress.report import CompressReport as CompressReport
from prunus.compress.report import LayerReport as LayerReport

__all__ = ["CompressConfig", "CompressReport", "LayerReport", "compress", "decompress", "load"]
