"""LIIF: Local Implicit Image Function (Chen, Liu, Wang, CVPR 2021) as software.

    >>> import liif
    >>> up = liif.load("edsr-baseline-liif")          # fetched and verified on first use
    >>> big = up.upscale(pil_image, scale=3.5)          # or size=(height, width), scale=(sy, sx)
"""
from liif.api import Upscaler, load, output_size
from liif.errors import LiifError

__version__ = "0.1.0"
__all__ = ["LiifError", "Upscaler", "load", "output_size", "__version__"]
