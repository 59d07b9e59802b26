"""The derive stage: activation -> SymPy derivation of the RNN's Jacobian and BPTT equations.

    derive(activation) -> Derivation    (derive.recurrence)
    parse_expression(text) -> SymPy     (derive.parse; no eval)
    CATALOGUE, all_activations()        (derive.catalogue)

This package never imports ``codegen``: data flows one way, from here to the printers.
"""
from derive.catalogue import CATALOGUE, Activation, all_activations
from derive.errors import DerivationError, ExpressionError
from derive.parse import parse_expression
from derive.recurrence import Derivation, derive

__all__ = ["CATALOGUE", "Activation", "Derivation", "DerivationError", "ExpressionError", "all_activations",
           "derive", "parse_expression"]
