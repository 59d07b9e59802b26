"""Gradient flow through time for the generated kernels: norms of dh_t/dh_k against the bound, Lyapunov exponents.

    from analysis import analyze, analyze_cell, format_table, format_cell_table
    python -m analysis --help
"""
from analysis.cell_flow import CellFlowReport, analyze_cell, format_cell_table
from analysis.gradient_flow import FlowReport, analyze, format_table, lyapunov_exponents, make_weights

__all__ = ["CellFlowReport", "FlowReport", "analyze", "analyze_cell", "format_cell_table", "format_table",
           "lyapunov_exponents", "make_weights"]
