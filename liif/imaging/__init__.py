"""Images in and out: files (``files``), the channel and quantisation policy (``channels``), the
streaming PNG writer (``png``) and NumPy/tensor conversions (``arrays``)."""
from liif.imaging.arrays import as_float, as_float_chw, decode_array, encode_array
from liif.imaging.channels import (
    LUMA,
    QUANTIZE,
    Decoded,
    compose,
    decode,
    finisher,
    prepare,
    quantize,
    quantize_tensor,
    resize_alpha,
    to_gray,
)
from liif.imaging.files import (
    IMAGE_SUFFIXES,
    PNG_SIGNATURE,
    WEB_SUFFIXES,
    MultiFrameInput,
    check_writable,
    image_files,
    open_image,
    png_bit_depth,
    read_rgb,
    save_png,
)
from liif.imaging.png import PNG_COLOR_TYPES, PngWriter, png_rows

__all__ = ["IMAGE_SUFFIXES", "LUMA", "PNG_COLOR_TYPES", "PNG_SIGNATURE", "QUANTIZE", "WEB_SUFFIXES", "Decoded",
           "MultiFrameInput", "PngWriter", "as_float", "as_float_chw", "check_writable", "compose", "decode",
           "decode_array", "encode_array", "finisher", "image_files", "open_image", "png_bit_depth", "png_rows",
           "prepare", "quantize", "quantize_tensor", "read_rgb", "resize_alpha", "save_png", "to_gray"]
