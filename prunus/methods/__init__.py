"""Method plug-ins for the Trainer. Importing this package registers every built-in method.

Each method registers with its config dataclass (`SFPConfig`, `FPGMConfig`, `MFPConfig`,
`CSGDConfig`): `method_arguments(name)` lists its fields, `method_config(name, **kw)` resolves
and validates them, `create_method(name, **kw)` builds the method.
"""

from prunus.methods import csgd as csgd
from prunus.methods import graft as graft
from prunus.methods import mfp as mfp
from prunus.methods import sfp as sfp
from prunus.methods import we as we
from prunus.methods._registry import METHODS as METHODS
from prunus.methods._registry import create_method as create_method
from prunus.methods._registry import list_methods as list_methods
from prunus.methods._registry import method_arguments as method_arguments
from prunus.methods._registry import method_config as method_config
from prunus.methods._registry import method_example as method_example
from prunus.methods._registry import register_method as register_method

__all__ = [
    "METHODS",
    "create_method",
    "list_methods",
    "method_arguments",
    "method_config",
    "method_example",
    "register_method",
]
