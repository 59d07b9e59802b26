"""Independent checks of generated kernels: ``gradcheck`` (central finite differences)."""
from verify.gradcheck import gradcheck, near_kink

__all__ = ["gradcheck", "near_kink"]
