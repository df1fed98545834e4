// liif viewer: continuous zoom (x1..x30) and pan; the server renders only the visible window,
// at device resolution, with LIIF region rendering. Plain JS, no build step.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $("view");
  const ctx = canvas.getContext("2d", { alpha: false });
  const ZOOM_MAX = 30;
  const STEP = 1.25;
  const BAND = 1 << 17;

  const st = {
    limits: null,
    image: null, // {id, name, width, height}
    source: null, // ImageBitmap of the original, the preview while renders are on their way
    zoom: 1, // CSS pixels per source pixel
    cx: 0, cy: 0, // source point shown at the canvas centre
    mode: "liif",
    split: 0.5,
    layers: { liif: { done: null, next: null }, bicubic: { done: null, next: null } },
    abort: null,
    seq: 0,
    timer: 0,
    sharp: false,
    pointers: new Map(),
  };

  // -- geometry -------------------------------------------------------------------------------
  function cssSize() {
    return { w: canvas.clientWidth, h: canvas.clientHeight };
  }

  function zoomLimits() {
    if (!st.image) return [1, ZOOM_MAX];
    const c = cssSize();
    const fit = Math.min(c.w / st.image.width, c.h / st.image.height);
    const dpr = window.devicePixelRatio || 1;
    const top = st.limits ? Math.min(ZOOM_MAX, st.limits.max_scale / dpr) : ZOOM_MAX;
    return [Math.min(1, fit), top];
  }

  // The virtual output (W, H) in device pixels, where it sits on the canvas (ox, oy), and the
  // visible window (x, y, w, h) of it.
  function geometry() {
    const dpr = window.devicePixelRatio || 1;
    const cw = canvas.width, ch = canvas.height;
    const W = Math.max(1, Math.round(st.image.width * st.zoom * dpr));
    const H = Math.max(1, Math.round(st.image.height * st.zoom * dpr));
    const ox = Math.round(cw / 2 - (st.cx * W) / st.image.width);
    const oy = Math.round(ch / 2 - (st.cy * H) / st.image.height);
    const x = Math.max(0, -ox), y = Math.max(0, -oy);
    const w = Math.min(W, cw - ox) - x, h = Math.min(H, ch - oy) - y;
    return { W, H, ox, oy, x, y, w, h, dpr };
  }

  function clampView() {
    const [lo, hi] = zoomLimits();
    st.zoom = Math.min(hi, Math.max(lo, st.zoom));
    st.cx = Math.min(st.image.width, Math.max(0, st.cx));
    st.cy = Math.min(st.image.height, Math.max(0, st.cy));
  }

  function resizeCanvas() {
    const dpr = window.devicePixelRatio || 1;
    const c = cssSize();
    const w = Math.max(1, Math.round(c.w * dpr)), h = Math.max(1, Math.round(c.h * dpr));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
  }

  // -- drawing --------------------------------------------------------------------------------
  function drawLayer(layer, g, clipX0, clipX1) {
    if (!layer || layer.imageId !== st.image.id) return;
    const kx = g.W / layer.W, ky = g.H / layer.H;
    ctx.save();
    ctx.beginPath();
    ctx.rect(clipX0, 0, clipX1 - clipX0, canvas.height);
    ctx.clip();
    // Same size as now: pixel for pixel, no resampling. Otherwise scaled until the new one comes.
    ctx.imageSmoothingEnabled = !(kx === 1 && ky === 1);
    ctx.imageSmoothingQuality = "high";
    for (const b of layer.bands) {
      ctx.drawImage(b.bitmap, g.ox + b.x * kx, g.oy + b.y * ky, b.w * kx, b.h * ky);
    }
    ctx.restore();
  }

  function redraw() {
    resizeCanvas();
    ctx.fillStyle = "#17171b";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!st.image) return;
    const g = geometry();
    if (st.source) {
      ctx.imageSmoothingEnabled = true;
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(st.source, g.ox, g.oy, g.W, g.H);
    }
    const cut = st.mode === "split" ? Math.round(canvas.width * st.split) : canvas.width;
    if (st.mode !== "bicubic") {
      drawLayer(st.layers.liif.done, g, 0, cut);
      drawLayer(st.layers.liif.next, g, 0, cut);
    }
    if (st.mode !== "liif") {
      const from = st.mode === "split" ? cut : 0;
      drawLayer(st.layers.bicubic.done, g, from, canvas.width);
      drawLayer(st.layers.bicubic.next, g, from, canvas.width);
    }
    if (st.mode === "split") {
      ctx.fillStyle = "#9fd3ff";
      ctx.fillRect(cut - 1, 0, 2, canvas.height);
      ctx.font = `${Math.round(12 * g.dpr)}px system-ui, sans-serif`;
      ctx.fillStyle = "rgba(0,0,0,.6)";
      ctx.fillRect(cut - 58 * g.dpr, 8 * g.dpr, 52 * g.dpr, 20 * g.dpr);
      ctx.fillRect(cut + 6 * g.dpr, 8 * g.dpr, 64 * g.dpr, 20 * g.dpr);
      ctx.fillStyle = "#fff";
      ctx.fillText("LIIF", cut - 50 * g.dpr, 22 * g.dpr);
      ctx.fillText("bicubic", cut + 12 * g.dpr, 22 * g.dpr);
    }
    $("zoom").value = `x${st.zoom.toFixed(2)}`;
  }

  // -- rendering requests ----------------------------------------------------------------------
  function setStatus(text, error = false) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("error", error);
  }

  // The readiness marker for tests and tools: "1" when every visible pixel is the model's at this view.
  function setSharp(v) {
    st.sharp = v;
    document.documentElement.dataset.sharp = v ? "1" : "0";
  }

  function schedule(delay = 150) {
    setSharp(false);
    saveHash();
    clearTimeout(st.timer);
    st.timer = setTimeout(requestRenders, delay);
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // fetch, retried while the server answers busy (503: its render or decode queue is full)
  async function fetchPatiently(url, options = {}) {
    for (let attempt = 0; ; attempt++) {
      const r = await fetch(url, options);
      if (!((r.status === 503 || r.status === 429) && attempt < 30)) return r;
      setStatus("server busy, waiting…");
      await sleep(500);
    }
  }

  async function fetchBand(params, signal) {
    const r = await fetchPatiently(`/api/render?${new URLSearchParams(params)}`, { signal });
    if (r.ok) return createImageBitmap(await r.blob());
    let detail = r.statusText;
    try { detail = (await r.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(`${r.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }

  // Render the visible window in bands of at most limits.view_pixels, one request at a time.
  async function renderLayer(method, g, signal, seq) {
    const slot = st.layers[method];
    const layer = { imageId: st.image.id, W: g.W, H: g.H, region: [g.x, g.y, g.w, g.h], bands: [] };
    slot.next = layer;
    // Bands of up to BAND pixels: the window fills in progressively on a slow (CPU) server.
    const rows = Math.max(1, Math.floor(Math.min(BAND, st.limits.view_pixels) / g.w));
    for (let y = g.y; y < g.y + g.h; y += rows) {
      const h = Math.min(rows, g.y + g.h - y);
      const params = { image: st.image.id, W: g.W, H: g.H, x: g.x, y, w: g.w, h, method };
      const bitmap = await fetchBand(params, signal);
      if (seq !== st.seq) return false;
      layer.bands.push({ bitmap, x: g.x, y, w: g.w, h });
      redraw();
    }
    slot.done = layer;
    slot.next = null;
    return true;
  }

  async function requestRenders() {
    if (!st.image) return;
    const g = geometry();
    const seq = ++st.seq;
    if (st.abort) st.abort.abort();
    st.abort = new AbortController();
    const upscaling = g.W > st.image.width || g.H > st.image.height;
    if (g.w <= 0 || g.h <= 0 || !upscaling) {
      setSharp(true); // at or below the source's size the source itself is what is shown
      setStatus(`${g.W}×${g.H} · source`);
      return;
    }
    const same = (l) => l && l.imageId === st.image.id && l.W === g.W && l.H === g.H &&
      l.region.join() === [g.x, g.y, g.w, g.h].join();
    const methods = (st.mode === "split" ? ["liif", "bicubic"] : [st.mode]).filter((m) => !same(st.layers[m].done));
    const t0 = performance.now();
    setStatus(`rendering ${g.w}×${g.h} of ${g.W}×${g.H}…`);
    try {
      for (const m of methods) {
        if (!(await renderLayer(m, g, st.abort.signal, seq))) return;
      }
    } catch (e) {
      if (e.name !== "AbortError") setStatus(String(e.message || e), true);
      return;
    }
    if (seq !== st.seq) return;
    setSharp(true);
    setStatus(`${g.W}×${g.H} · window ${g.w}×${g.h} in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
    redraw();
  }

  // -- interaction ----------------------------------------------------------------------------
  function zoomAt(factor, px, py) {
    if (!st.image) return;
    const c = cssSize();
    const z0 = st.zoom;
    const sx = st.cx + (px - c.w / 2) / z0, sy = st.cy + (py - c.h / 2) / z0;
    st.zoom = z0 * factor;
    clampView();
    st.cx = sx - (px - c.w / 2) / st.zoom;
    st.cy = sy - (py - c.h / 2) / st.zoom;
    clampView();
    redraw();
    schedule();
  }

  function zoomCentre(factor) {
    const c = cssSize();
    zoomAt(factor, c.w / 2, c.h / 2);
  }

  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = canvas.getBoundingClientRect();
    const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? 400 : 1;
    const k = e.ctrlKey ? 0.01 : 0.0015; // ctrl+wheel is a trackpad pinch
    zoomAt(Math.exp(-e.deltaY * unit * k), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });

  function nearSplit(px) {
    return st.mode === "split" && Math.abs(px - cssSize().w * st.split) < 8;
  }

  canvas.addEventListener("pointerdown", (e) => {
    canvas.setPointerCapture(e.pointerId);
    const r = canvas.getBoundingClientRect();
    const px = e.clientX - r.left;
    st.pointers.set(e.pointerId, { x: e.clientX, y: e.clientY, splitting: nearSplit(px) });
    canvas.classList.add("dragging");
  });

  canvas.addEventListener("pointermove", (e) => {
    const p = st.pointers.get(e.pointerId);
    if (!p || !st.image) return;
    const r = canvas.getBoundingClientRect();
    if (st.pointers.size === 2) { // pinch: scale by the change of distance, about the midpoint
      const [a, b] = [...st.pointers.values()];
      const before = Math.hypot(a.x - b.x, a.y - b.y);
      p.x = e.clientX; p.y = e.clientY;
      const after = Math.hypot(a.x - b.x, a.y - b.y);
      if (before > 0) zoomAt(after / before, (a.x + b.x) / 2 - r.left, (a.y + b.y) / 2 - r.top);
      return;
    }
    if (p.splitting) {
      st.split = Math.min(0.95, Math.max(0.05, (e.clientX - r.left) / cssSize().w));
      p.x = e.clientX; p.y = e.clientY;
      redraw();
      return;
    }
    st.cx -= (e.clientX - p.x) / st.zoom;
    st.cy -= (e.clientY - p.y) / st.zoom;
    p.x = e.clientX; p.y = e.clientY;
    clampView();
    redraw();
    schedule();
  });

  function endPointer(e) {
    st.pointers.delete(e.pointerId);
    if (st.pointers.size === 0) canvas.classList.remove("dragging");
  }
  canvas.addEventListener("pointerup", endPointer);
  canvas.addEventListener("pointercancel", endPointer);

  $("zoom-in").addEventListener("click", () => zoomCentre(STEP));
  $("zoom-out").addEventListener("click", () => zoomCentre(1 / STEP));
  $("fit").addEventListener("click", () => {
    if (!st.image) return;
    const c = cssSize();
    st.zoom = Math.min(c.w / st.image.width, c.h / st.image.height);
    st.cx = st.image.width / 2;
    st.cy = st.image.height / 2;
    clampView();
    redraw();
    schedule(0);
  });
  $("mode").addEventListener("change", (e) => {
    st.mode = e.target.value;
    redraw();
    schedule(0);
  });
  window.addEventListener("resize", () => { if (st.image) { clampView(); } redraw(); schedule(); });

  // -- images ---------------------------------------------------------------------------------
  async function openImage(info, view = null) {
    setStatus(`opening ${info.name}…`);
    const r = await fetchPatiently(`/api/source?image=${encodeURIComponent(info.id)}`);
    if (!r.ok) { setStatus(`cannot open ${info.name}: ${r.status}`, true); return; }
    const source = await createImageBitmap(await r.blob());
    st.image = info;
    st.source = source;
    const sel = $("images");
    if (![...sel.options].some((o) => o.value === info.id)) sel.appendChild(option(info, "uploaded: "));
    sel.value = info.id;
    st.layers = { liif: { done: null, next: null }, bicubic: { done: null, next: null } };
    const c = cssSize();
    st.zoom = view ? view.zoom : Math.min(c.w / info.width, c.h / info.height);
    st.cx = view ? view.x : info.width / 2;
    st.cy = view ? view.y : info.height / 2;
    clampView();
    const k = Math.max(1, Math.floor(Math.sqrt(st.limits.download_pixels / (info.width * info.height))));
    $("dl-w").value = info.width * Math.min(4, k);
    $("dl-h").value = info.height * Math.min(4, k);
    $("hint").hidden = true;
    redraw();
    schedule(0);
  }

  $("images").addEventListener("change", async (e) => {
    const opt = e.target.selectedOptions[0];
    if (opt && opt.value) await openImage(JSON.parse(opt.dataset.info));
  });

  $("upload").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    setStatus(`uploading ${file.name}…`);
    const body = new FormData();
    body.append("file", file);
    const r = await fetchPatiently("/api/upload", { method: "POST", body });
    if (!r.ok) {
      let detail = r.statusText;
      try { detail = (await r.json()).detail; } catch (err) { /* not JSON */ }
      setStatus(`upload refused (${r.status}): ${detail}`, true);
      return;
    }
    await openImage(await r.json());
  });

  $("download").addEventListener("click", async () => {
    if (!st.image) return;
    const W = parseInt($("dl-w").value, 10), H = parseInt($("dl-h").value, 10);
    if (!(W > 0 && H > 0)) { setStatus("download size must be positive", true); return; }
    setStatus(`rendering ${W}×${H} for download…`);
    const r = await fetch(`/api/download?${new URLSearchParams({ image: st.image.id, W, H })}`);
    if (!r.ok) {
      let detail = r.statusText;
      try { detail = (await r.json()).detail; } catch (err) { /* not JSON */ }
      setStatus(`download refused (${r.status}): ${detail}`, true);
      return;
    }
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await r.blob());
    a.download = `${st.image.name.replace(/\.[^.]*$/, "")}-liif-${W}x${H}.png`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    setStatus(`downloaded ${W}×${H}`);
  });

  function option(info, prefix) {
    const o = document.createElement("option");
    o.value = info.id;
    o.textContent = `${prefix}${info.name} (${info.width}×${info.height})`;
    o.dataset.info = JSON.stringify(info);
    return o;
  }

  // -- deep links: #image=<name>&zoom=<z>&x=<cx>&y=<cy> -----------------------------------------
  // zoom: output (CSS) pixels per source pixel; x, y: the source point at the viewport centre.
  function readHash() {
    const p = new URLSearchParams(location.hash.replace(/^#/, ""));
    const name = p.get("image");
    if (!name) return null;
    const num = (k) => { const v = parseFloat(p.get(k)); return Number.isFinite(v) ? v : null; };
    return { name, zoom: num("zoom"), x: num("x"), y: num("y") };
  }

  function hashOf() {
    const name = st.image.id.startsWith("f:") ? st.image.name : st.image.id;
    const r = (v, d) => String(Math.round(v * 10 ** d) / 10 ** d);
    return "#" + new URLSearchParams({ image: name, zoom: r(st.zoom, 4), x: r(st.cx, 2), y: r(st.cy, 2) });
  }

  function saveHash() {
    if (!st.image) return;
    const h = hashOf();
    if (h !== location.hash) history.replaceState(null, "", h); // no history entry per pan step
  }

  function listed(name) {
    const infos = [...$("images").options].filter((o) => o.value).map((o) => JSON.parse(o.dataset.info));
    return infos.find((i) => i.name === name && i.id.startsWith("f:")) || infos.find((i) => i.id === name);
  }

  // Show the view a hash names (or, with none, the first image fitted); false when it names nothing known.
  async function showLink() {
    const link = readHash();
    const info = link ? listed(link.name) : null;
    if (link && !info) { setStatus(`no image named ${link.name}`, true); return false; }
    if (!info) {
      const first = [...$("images").options].find((o) => o.value);
      if (first) await openImage(JSON.parse(first.dataset.info));
      return true;
    }
    const c = cssSize();
    const view = {
      zoom: link.zoom > 0 ? link.zoom : Math.min(c.w / info.width, c.h / info.height),
      x: link.x !== null ? link.x : info.width / 2,
      y: link.y !== null ? link.y : info.height / 2,
    };
    if (st.image && st.image.id === info.id) {
      st.zoom = view.zoom; st.cx = view.x; st.cy = view.y;
      clampView();
      redraw();
      schedule(0);
    } else {
      await openImage(info, view);
    }
    return true;
  }

  window.addEventListener("hashchange", () => {
    if (st.image && location.hash === hashOf()) return; // our own replaceState
    showLink();
  });

  async function init() {
    setSharp(false);
    st.limits = (await (await fetch("/api/config")).json()).limits;
    const list = await (await fetch("/api/images")).json();
    const sel = $("images");
    for (const info of list) sel.appendChild(option(info, ""));
    redraw();
    await showLink();
    window.liifViewer.ready = true;
  }

  // A small read-only hook for tests and the console.
  window.liifViewer = {
    ready: false,
    state() {
      const g = st.image ? geometry() : null;
      const done = st.layers.liif.done;
      return {
        image: st.image, zoom: st.zoom, cx: st.cx, cy: st.cy, mode: st.mode, sharp: st.sharp, geometry: g,
        canvas: { width: canvas.width, height: canvas.height },
        liif: done && { W: done.W, H: done.H, region: done.region,
          bands: done.bands.map((b) => [b.x, b.y, b.w, b.h]) },
      };
    },
    open: (id) => openImage(JSON.parse([...$("images").options].find((o) => o.value === id).dataset.info)),
  };

  init().catch((e) => setStatus(`cannot reach the server: ${e}`, true));
})();
