"""The errors the derive stage raises. Both are ValueErrors, so ``except ValueError`` catches every refusal."""


class ExpressionError(ValueError):
    """User text that ``parse_expression`` refuses; the message quotes the offending text."""


class DerivationError(ValueError):
    """An activation the engine cannot derive a kernel for (constant, not in x, no elementary derivative, ...)."""
