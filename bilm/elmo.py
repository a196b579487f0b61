"""The original library's ``bilm.elmo`` import path: ``weight_layers`` (the code lives in ``bilm.core.elmo``)."""
from .core.elmo import weight_layers

__all__ = ["weight_layers"]
