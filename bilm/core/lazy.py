"""Names of a package loaded from their modules when first used (PEP 562), so that importing the
package, or one of its modules, does not import TensorFlow."""
import importlib


def lazy_names(package, exports):
    """``(__getattr__, __dir__)`` for ``package`` (its ``__name__``): ``exports`` maps each name to the
    module, relative to the package, that defines it; a name is imported once, then kept."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name):
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
