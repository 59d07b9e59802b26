"""The generated kernels where people train: a PyTorch module (interop.torch_rnn) and a JAX function
(interop.jax_rnn). Both take any catalogue name or an expression in x; both are optional extras."""
