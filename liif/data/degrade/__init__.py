"""Degradations of real photos, for training (:mod:`.pipeline`: Real-ESRGAN's second-order recipe, ended by
the resize to the LR size of the sampled scale) and for evaluation sets (:mod:`.camera`, :mod:`.folder`).

One operator per module: blur kernels (:mod:`.kernels`) and their filtering (:mod:`.blur`), resizing
(:mod:`.resize`), noise (:mod:`.noise`), JPEG (:mod:`.jpeg`); the recipe's settings are :mod:`.settings`.
Images are float32 (H, W, 3) arrays in [0, 1] between operators and uint8 at the ends. Everything is drawn
from a ``numpy.random.Generator`` the caller seeds, so a sample depends on its seed alone.
"""
