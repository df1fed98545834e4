"""Networks: encoders (EDSR, RDN), the MLP, the decoder families behind one seam
(``liif.models.decoder``), the registry of families (``liif.models.family``), plus ``build`` from a spec."""
from liif.models.decoder import ImplicitDecoder
from liif.models.edsr import EDSR
from liif.models.family import Family

# Importing a family file registers its family: one import per family.
from liif.models.liif import LIIF
from liif.models.lte import LTE
from liif.models.mlp import MLP
from liif.models.rdn import RDN
from liif.models.spec import ModelSpec, build

__all__ = ["EDSR", "LIIF", "LTE", "MLP", "RDN", "Family", "ImplicitDecoder", "ModelSpec", "build"]
