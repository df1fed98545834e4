"""Data: reading, cropping and PIL-bicubic down-sampling of images (spec section 5)."""
