"""Benchmarks of the generated kernels against PyTorch, JAX and the matrix-product floor (``make bench``)."""
