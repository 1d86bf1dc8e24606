"""The GB/T 37964 technique catalogue.

Each technique is one class in one module of this package, registered under the name the
policy uses (`technique: pseudonymise`). It checks its own parameters (`check`, raising a
`PolicyError` that names the column) and transforms one column vectorised (`apply`). A new
technique is a new module here and no edit elsewhere: the registry imports every module of
the package the first time a name is looked up.
"""

from deidflow.techniques.base import ApplyContext, Technique, registry

__all__ = ["ApplyContext", "Technique", "registry"]
