"""Video: upscale every frame of a video to any size, streamed, keeping its audio and timing.

Decoding, muxing and encoding use PyAV (FFmpeg's libraries, bundled in its wheels; optional extra
``liif[video]``). Frames flow through bounded queues, one thread decoding, the caller's thread
rendering and one thread encoding, so memory does not grow with the video's length and, on CUDA,
decode and encode overlap the render. The model's compute backend and the render plan are built
once per video (per input frame size for :func:`upscale_frames`).

What the output keeps from the input:

- every frame with its own timestamp (``pts`` and time base copied frame by frame, so variable
  frame rate survives) and the stream's frame rate;
- audio, subtitle and further video streams (cover art, say), remuxed packet for packet, never
  re-encoded;
- the rotation (display matrix): frames stay in their coded orientation and get the same rotation
  tag; ``size``/``scale`` are in displayed orientation (what players show);
- the colour description: frames are converted to RGB with the input's matrix and range (an
  untagged input is read as BT.709 from 720 lines up, else BT.601, as players do), rendered in RGB
  and converted back with the input's matrix and range, which are tagged on the output, primaries
  and transfer too. An untagged input gets the matrix players assume for the *output* size, and
  that tag. Inputs above 8 bits per sample are rendered from 16-bit RGB and keep their pixel
  format where the encoder supports it;
- anamorphic inputs keep their display aspect ratio when ``size`` keeps it (the sample aspect ratio
  is rescaled).

Encoders whose pixel format subsamples chroma (H.264 in yuv420p: both axes) need even dimensions:
an odd output width or height is rounded up to the next even number, with a note.
"""
from liif.video.formats import DEFAULT_CODEC, MUXERS, VIDEO_SUFFIXES, is_video, require_av
from liif.video.frames import FrameUpscaler, upscale_frames
from liif.video.transcode import VideoReport, upscale_video

__all__ = ["DEFAULT_CODEC", "MUXERS", "VIDEO_SUFFIXES", "FrameUpscaler", "VideoReport", "is_video", "require_av",
           "upscale_frames", "upscale_video"]
