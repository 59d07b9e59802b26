"""Gradient flow through time for the generated kernels: norms of dh_t/dh_k against the bound, Lyapunov exponents.

    from analysis import analyze, format_table, plot
    python -m analysis --help
"""
from analysis.gradient_flow import FlowReport, analyze, format_table, lyapunov_exponents, make_weights

__all__ = ["FlowReport", "analyze", "format_table", "lyapunov_exponents", "make_weights"]
