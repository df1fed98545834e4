"""Networks: encoders (EDSR, RDN), the MLP and the LIIF decoder, plus ``build`` from a spec."""
from liif.models.edsr import EDSR
from liif.models.liif import LIIF
from liif.models.mlp import MLP
from liif.models.rdn import RDN
from liif.models.spec import ModelSpec, build

__all__ = ["EDSR", "LIIF", "MLP", "RDN", "ModelSpec", "build"]
