"""Networks: encoders (EDSR, RDN), the MLP, the decoder families behind one seam
(``liif.models.decoder``), the registry of families (``liif.models.family``), plus ``build`` from a spec.

Every module of this package is imported here, so a family file registers its family by being in
this folder: adding a family edits no other file."""
import importlib
import pkgutil

from liif.models.decoder import ImplicitDecoder
from liif.models.edsr import EDSR
from liif.models.family import Family
from liif.models.liif import LIIF
from liif.models.lte import LTE
from liif.models.mlp import MLP
from liif.models.rdn import RDN
from liif.models.spec import ModelSpec, build

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["EDSR", "LIIF", "LTE", "MLP", "RDN", "Family", "ImplicitDecoder", "ModelSpec", "build"]
