"""sfotorch: the adaptive batch-size and learning-rate scheduler for PyTorch training.

Built on :mod:`sfotheory`'s one stage rule (:mod:`sfotheory.rule`).
"""

__all__: list[str] = []
