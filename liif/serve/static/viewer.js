// liif viewer: continuous zoom (x1..x30) and pan. The view is cut into tiles of a fixed grid
// (TILE x TILE device pixels of the virtual output at the current zoom); the server renders each
// tile with LIIF region rendering from its cache of the image's features. Tiles are kept and reused
// across pans; a coarse pass (1/COARSE of the resolution, decoded without the local ensemble: the
// "preview" method) comes first where the model's decode is costly; requests for tiles the view no
// longer needs are aborted; when the view is sharp, a ring of tiles around it is fetched. Plain JS,
// no build step.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $("view");
  const ctx = canvas.getContext("2d", { alpha: false });
  const ZOOM_MAX = 30;
  const STEP = 1.25;
  const TILE = 256; // device pixels per side of a tile of the output grid
  const KEEP = 600; // tiles kept in memory (least recently stored dropped first)
  const RING = 12; // tiles fetched around a sharp view, nearest first

  const st = {
    limits: null,
    image: null, // {id, name, width, height}
    source: null, // ImageBitmap of the original, the preview while renders are on their way
    zoom: 1, // CSS pixels per source pixel
    cx: 0, cy: 0, // source point shown at the canvas centre
    mode: "liif",
    split: 0.5,
    tiles: new Map(), // key -> {method, imageId, W, H, x, y, w, h, bitmap}
    flight: new Map(), // key -> {ctrl: AbortController, kind} of the request on its way
    // performance.now() of the last change of view, of its coarse preview and of its sharp view
    marks: { changed: 0, coarse: null, sharp: null },
    queue: [], // tile jobs not yet asked for, in order
    need: null, // cell key -> the part of the cell the current view needs to be sharp
    ringDone: false,
    t0: 0,
    coarse: 1, // the server's coarse factor (1: no coarse pass)
    parallel: 2, // tile requests at once: one per server render worker, and one waiting
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
  // Every kept tile of the image that meets the canvas, scaled to the current view: other zoom
  // levels (coarse ones first) are placeholders under the current level's tiles, drawn last.
  function drawTiles(method, g, clipX0, clipX1) {
    // LIIF's coarse tiles ("preview") lie under LIIF's; the current level's sharp tiles come last
    const mine = (t) => t.method === method || (method === "liif" && t.method === "preview");
    const list = [...st.tiles.values()].filter((t) => mine(t) && t.imageId === st.image.id);
    const top = (t) => t.W === g.W && t.method === method;
    list.sort((a, b) => (top(a) - top(b)) || (a.W - b.W));
    ctx.save();
    ctx.beginPath();
    ctx.rect(clipX0, 0, clipX1 - clipX0, canvas.height);
    ctx.clip();
    ctx.imageSmoothingQuality = "high";
    for (const t of list) {
      const kx = g.W / t.W, ky = g.H / t.H;
      const dx = g.ox + t.x * kx, dy = g.oy + t.y * ky, dw = t.w * kx, dh = t.h * ky;
      if (dx > clipX1 || dy > canvas.height || dx + dw < clipX0 || dy + dh < 0) continue;
      ctx.imageSmoothingEnabled = !(kx === 1 && ky === 1); // the current level: pixel for pixel
      ctx.drawImage(t.bitmap, dx, dy, dw, dh);
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
    if (st.mode !== "bicubic") drawTiles("liif", g, 0, cut);
    if (st.mode !== "liif") drawTiles("bicubic", g, st.mode === "split" ? cut : 0, canvas.width);
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
    if (v && !st.sharp && st.marks.sharp === null) st.marks.sharp = performance.now();
    st.sharp = v;
    document.documentElement.dataset.sharp = v ? "1" : "0";
  }

  function schedule(delay = 150) {
    st.marks = { changed: performance.now(), coarse: null, sharp: null };
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

  async function fetchTile(params, signal) {
    const r = await fetchPatiently(`/api/render?${new URLSearchParams(params)}`, { signal });
    if (r.ok) return createImageBitmap(await r.blob());
    let detail = r.statusText;
    try { detail = (await r.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(`${r.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }

  const keyOf = (method, W, H, x, y) => `${method}|${st.image.id}|${W}x${H}|${x},${y}`;

  // The grid cells of a W x H output that meet the window win = {x, y, w, h}, nearest its centre
  // first: {cx, cy} the cell's corner, {x, y, w, h} the part of it inside win (a cell at the edge of
  // the view is asked for only where it is visible, so a view costs its own pixels; a later view
  // that shows more of it asks again).
  function gridTiles(W, H, win) {
    const out = [];
    const mx = win.x + win.w / 2, my = win.y + win.h / 2;
    for (let cy = Math.floor(win.y / TILE) * TILE; cy < win.y + win.h; cy += TILE) {
      for (let cx = Math.floor(win.x / TILE) * TILE; cx < win.x + win.w; cx += TILE) {
        const x = Math.max(cx, win.x), y = Math.max(cy, win.y);
        const w = Math.min(cx + TILE, W, win.x + win.w) - x, h = Math.min(cy + TILE, H, win.y + win.h) - y;
        out.push({ cx, cy, x, y, w, h, d: Math.hypot(x + w / 2 - mx, y + h / 2 - my) });
      }
    }
    return out.sort((a, b) => a.d - b.d);
  }

  const covers = (t, r) => t && t.x <= r.x && t.y <= r.y && t.x + t.w >= r.x + r.w && t.y + t.h >= r.y + r.h;

  // Jobs for what the kept tiles lack of window win of a W x H output; view: the window whose
  // features the server computes first, in one piece (within its pixels per request).
  function jobsFor(method, W, H, win, kind) {
    const fits = win.w * win.h <= st.limits.view_pixels;
    const view = fits ? [win.x, win.y, win.w, win.h].join() : null;
    return gridTiles(W, H, win).map((t) => {
      const key = keyOf(method, W, H, t.cx, t.cy);
      return { ...t, method, W, H, view, kind, key, id: `${key}|${t.x},${t.y},${t.w},${t.h}` };
    }).filter((j) => !covers(st.tiles.get(j.key), j));
  }

  function keep(job, bitmap) {
    if (covers(st.tiles.get(job.key), job)) { bitmap.close(); return; } // a larger part came first
    if (st.tiles.has(job.key)) st.tiles.get(job.key).bitmap.close();
    st.tiles.delete(job.key);
    st.tiles.set(job.key, { method: job.method, imageId: st.image.id, W: job.W, H: job.H, x: job.x, y: job.y,
      w: job.w, h: job.h, bitmap });
    for (const [k, t] of st.tiles) {
      if (st.tiles.size <= KEEP) break;
      if (st.need && st.need.has(k)) continue;
      t.bitmap.close();
      st.tiles.delete(k);
    }
  }

  async function start(job) {
    const ctrl = new AbortController();
    const flight = { ctrl, kind: job.kind, job };
    st.flight.set(job.id, flight);
    const imageId = st.image.id;
    try {
      const params = { image: imageId, W: job.W, H: job.H, x: job.x, y: job.y, w: job.w, h: job.h,
        method: job.method };
      if (job.view && job.method !== "bicubic") params.view = job.view;
      const bitmap = await fetchTile(params, ctrl.signal);
      if (!st.image || st.image.id !== imageId) { bitmap.close(); return; }
      keep(job, bitmap);
      redraw();
      if (job.kind === "coarse" && st.marks.coarse === null && !st.queue.some((j) => j.kind === "coarse") &&
          ![...st.flight.values()].some((f) => f !== flight && f.kind === "coarse")) st.marks.coarse = performance.now();
      checkSharp();
    } catch (e) {
      if (e.name !== "AbortError") setStatus(String(e.message || e), true);
    } finally {
      if (st.flight.get(job.id) === flight) st.flight.delete(job.id);
      pump();
    }
  }

  function pump() {
    while (st.flight.size < st.parallel && st.queue.length) {
      const job = st.queue.shift();
      if (!covers(st.tiles.get(job.key), job) && !st.flight.has(job.id)) start(job);
    }
    if (st.flight.size === 0 && st.queue.length === 0 && st.sharp && !st.ringDone) ring();
  }

  // Idle and sharp: the tiles one step around the view, so that a pan finds them ready.
  function ring() {
    st.ringDone = true;
    if (st.mode === "bicubic" || !st.image || !window.liifViewer.prefetch) return;
    const g = geometry();
    const x0 = Math.max(0, g.x - TILE), y0 = Math.max(0, g.y - TILE);
    const win = { x: x0, y: y0, w: Math.min(g.W, g.x + g.w + TILE) - x0, h: Math.min(g.H, g.y + g.h + TILE) - y0 };
    st.queue = jobsFor("liif", g.W, g.H, win, "ring").slice(0, RING);
    pump();
  }

  function checkSharp() {
    if (!st.need || st.sharp) return;
    for (const [k, r] of st.need) if (!covers(st.tiles.get(k), r)) return;
    setSharp(true);
    const g = geometry();
    setStatus(`${g.W}×${g.H} · ${st.need.size} tiles sharp in ${((performance.now() - st.t0) / 1000).toFixed(2)} s`);
    if (st.queue.length === 0) pump();
  }

  function requestRenders() {
    if (!st.image) return;
    const g = geometry();
    const upscaling = g.W > st.image.width || g.H > st.image.height;
    st.t0 = performance.now();
    st.ringDone = false;
    if (g.w <= 0 || g.h <= 0 || !upscaling) {
      for (const f of st.flight.values()) f.ctrl.abort();
      st.flight.clear();
      st.queue = [];
      st.need = null;
      setSharp(st.source !== null); // at or below the source's size the source itself is what is shown
      setStatus(`${g.W}×${g.H} · source`);
      return;
    }
    const win = { x: g.x, y: g.y, w: g.w, h: g.h };
    const methods = st.mode === "split" ? ["liif", "bicubic"] : [st.mode];
    const sharp = methods.flatMap((m) => jobsFor(m, g.W, g.H, win, "sharp"));
    st.need = new Map(methods.flatMap((m) => gridTiles(g.W, g.H, win).map((t) => [keyOf(m, g.W, g.H, t.cx, t.cy), t])));
    let coarse = [];
    // the coarse level: 1/st.coarse of the resolution per axis, but at least x1.25 of the source
    const k = Math.min(st.coarse, g.W / st.image.width / 1.25);
    const Wc = Math.round(g.W / k), Hc = Math.round(g.H / k);
    if (k >= 1.5 && sharp.some((j) => j.method === "liif")) {
      const x0 = Math.floor(g.x / k), y0 = Math.floor(g.y / k);
      const cw = { x: x0, y: y0, w: Math.min(Wc, Math.ceil((g.x + g.w) / k)) - x0,
        h: Math.min(Hc, Math.ceil((g.y + g.h) / k)) - y0 };
      coarse = jobsFor("preview", Wc, Hc, cw, "coarse");
      if (coarse.length === 0) st.marks.coarse = performance.now(); // the kept coarse tiles cover the view
    }
    // a request on its way that covers a job (a prefetched tile the view now shows) is waited for
    const flights = [...st.flight.entries()];
    const useful = (j) => flights.find(([, f]) => f.job.key === j.key && covers(f.job, j));
    const wanted = new Set();
    st.queue = [...coarse, ...sharp].filter((j) => {
      const f = useful(j);
      wanted.add(f ? f[0] : j.id);
      return !f;
    });
    for (const [id, f] of st.flight) {
      if (!wanted.has(id)) { f.ctrl.abort(); st.flight.delete(id); } // stale: the view moved on
    }
    if (sharp.length === 0) checkSharp();
    else setStatus(`rendering ${sharp.length} tiles of ${g.W}×${g.H}…`);
    pump();
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
  // The view's tiles are asked for at once; the source image (the preview under them) comes beside them.
  async function openImage(info, view = null) {
    setStatus(`opening ${info.name}…`);
    st.image = info;
    if (st.source) st.source.close();
    st.source = null;
    const sel = $("images");
    if (![...sel.options].some((o) => o.value === info.id)) sel.appendChild(option(info, "uploaded: "));
    sel.value = info.id;
    for (const t of st.tiles.values()) t.bitmap.close();
    st.tiles.clear();
    st.need = null;
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
    const r = await fetchPatiently(`/api/source?image=${encodeURIComponent(info.id)}`);
    if (!r.ok) { setStatus(`cannot open ${info.name}: ${r.status}`, true); return; }
    const source = await createImageBitmap(await r.blob());
    if (st.image !== info) { source.close(); return; } // another image was opened meanwhile
    st.source = source;
    redraw();
    if (st.need === null) requestRenders(); // a view the source shows as it is: sharp now
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
    const config = await (await fetch("/api/config")).json();
    st.limits = config.limits;
    st.coarse = config.coarse || 1;
    st.parallel = (config.limits.workers || 1) + 1;
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
    prefetch: true, // fetch a ring of tiles around a sharp view (tests may turn it off)
    state() {
      const g = st.image ? geometry() : null;
      const tiles = (m) => [...st.tiles.values()].filter((t) => t.method === m && g && t.W === g.W &&
        t.H === g.H && st.need && st.need.has(keyOf(m, t.W, t.H, Math.floor(t.x / TILE) * TILE,
        Math.floor(t.y / TILE) * TILE))).map((t) => [t.x, t.y, t.w, t.h]);
      return {
        image: st.image, zoom: st.zoom, cx: st.cx, cy: st.cy, mode: st.mode, sharp: st.sharp, geometry: g,
        canvas: { width: canvas.width, height: canvas.height }, coarse: st.coarse,
        liif: g && { W: g.W, H: g.H, tiles: tiles("liif") }, bicubic: g && { tiles: tiles("bicubic") },
        requests: { flight: st.flight.size, queued: st.queue.length, kept: st.tiles.size }, marks: st.marks,
      };
    },
    open: (id) => openImage(JSON.parse([...$("images").options].find((o) => o.value === id).dataset.info)),
  };

  init().catch((e) => setStatus(`cannot reach the server: ${e}`, true));
})();
