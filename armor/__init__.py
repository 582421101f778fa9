"""ARMoR: attention-based multimodal movie retrieval.

The library never imports Ray; the `pipelines` package is the Ray layer.
"""

__version__ = "0.1.0"
