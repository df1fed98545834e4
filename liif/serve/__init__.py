"""``liif serve``: a local web viewer with continuous zoom, rendering only the visible window
(:mod:`liif.serve.app`, FastAPI; the page is plain HTML/JS under ``static/``)."""
