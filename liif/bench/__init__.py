"""Benchmarks that print ratios measured in one run: ``liif bench infer`` (``infer``: reference vs fast
rendering, with ``macs`` counting the work, ``timing`` the timers and matmul peak, ``memory`` the peak RSS
of whole ``liif upscale`` processes) and ``liif bench train`` (:mod:`liif.train.bench`); ``cli`` runs either."""
