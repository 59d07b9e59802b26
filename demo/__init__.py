"""A character-level language model trained with the generated kernels (``make demo``)."""
