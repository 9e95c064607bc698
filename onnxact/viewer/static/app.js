// onnxact viewer: plain JS over the JSON API (see /openapi.json). No build step.
"use strict";

const $ = (sel) => document.querySelector(sel);
const S = {
  model: null, images: [], image: null, layer: null, view: "filters", overlay: false, opacity: 0.6,
  normalize: "tile", cmap: "viridis", stats: null, preds: null, camClass: -1, renderToken: 0,
  imagesTotal: 0, imagesLoading: false,
};
const PAGE = 200; // images asked for per request; more load on scroll or with the "more" button
window.__onnxact = { layerClickAt: null, tilesShownAt: null, tilesShownMs: null };

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

async function api(path, opts) {
  const r = await fetch(path, opts);
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try {
      const j = await r.json();
      msg = typeof j.detail === "string" ? j.detail : (j.detail || []).map((d) => d.msg).join("; ") || msg;
    } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}

function status(text, isError = false) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

const shapeText = (s) => (s ? s.map((d, i) => (typeof d === "number" ? d : (i === 0 ? "N" : "?"))).join("×") : "?");
const fmt = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.001 && v !== 0) ? v.toExponential(2) : (+v.toFixed(4)).toString());
const imgBase = () => `/api/images/${S.image}`;

// [height, width] of a layer's maps: the captured shape where the model's own has unknown dims
function mapDims(layer) {
  const s = layer && (layer.captured_shape || layer.shape);
  if (!s || s.length < 3) return null;
  const d = layer.layout === "NHWC" ? [s[1], s[2]] : (layer.layout === "NCHW" ? [s[2], s[3]] : null);
  return d && d.every((x) => Number.isInteger(x) && x > 0) ? d : null;
}

// ------------------------------------------------------------------ model + layers
async function loadModel() {
  const m = await (await api(S.image ? `/api/model?image=${encodeURIComponent(S.image)}` : "/api/model")).json();
  S.model = m;
  const inp = m.inputs.map((i) => `${i.name} ${shapeText(i.shape)}`).join(", ");
  $("#model-info").replaceChildren(
    el("b", { text: m.name }), ` · ${m.layers.length} layers · input ${inp}`,
    el("span", { class: "pill", text: m.framework || "onnx" }),
    el("span", { class: "pill", text: `CAM: ${m.cam_method}` }),
    el("span", { class: "pill", text: m.sha256.slice(0, 10), title: "model sha256" }),
  );
  renderLayers();
}

function renderLayers() {
  const m = S.model;
  const q = $("#layer-filter").value.trim().toLowerCase();
  const list = $("#layers");
  list.replaceChildren();
  const seen = m.layers.length ? m.layers[0].dead_over_images : 0;
  $("#dead-note").textContent = seen ? `dead over ${seen} image${seen > 1 ? "s" : ""}` : "dead: pick an image";
  $("#dead-note").title = `dead: max |activation| <= ${m.dead_eps} on every image seen (as onnxact check)`;
  for (const L of m.layers) {
    if (q && !L.name.toLowerCase().includes(q) && !L.op_type.toLowerCase().includes(q)) continue;
    const op = L.activation ? `${L.op_type}+${L.activation}` : L.op_type;
    let dead = null;
    if (L.dead_filters !== null) {
      dead = el("span", { class: `dead ${L.dead_filters ? "some" : "zero"}`,
        title: `${L.dead_filters} of ${L.channels ?? "?"} filters with max |a| <= ${m.dead_eps} on the images seen`,
        text: L.dead_filters ? `${L.dead_filters} dead` : "0 dead" });
    }
    const li = el("li", { class: `layer${S.layer === L.index ? " active" : ""}`, "data-index": L.index,
      title: `${L.tensor} (${L.layout})`, onclick: () => selectLayer(L.index) },
      el("span", { class: "idx", text: L.index }), el("span", { class: "lname", text: L.name }), dead || el("span"),
      el("span", { class: "meta" }, el("span", { class: "op", text: op }), el("span", { text: shapeText(L.captured_shape || L.shape) }),
        el("span", { class: "nf", text: L.channels ? `${L.channels} ch` : "" })));
    list.append(li);
  }
}

// ------------------------------------------------------------------ images
function thumb(im) {
  return el("div", { class: `thumb${S.image === im.id ? " active" : ""}`, "data-id": im.id, title: im.name,
    onclick: () => selectImage(im.id) },
    el("img", { src: `/api/images/${im.id}/image.png?size=128`, alt: im.name, loading: "lazy" }),
    el("span", { class: "tag", text: im.source === "upload" ? "upload" : im.name.split("/").pop() }));
}

async function fetchImages(offset) {
  const r = await api(`/api/images?offset=${offset}&limit=${PAGE}`);
  S.imagesTotal = +(r.headers.get("X-Total-Count") || 0);
  return r.json();
}

function moreButton() {
  const left = S.imagesTotal - S.images.length;
  if (left <= 0) return null;
  return el("button", { class: "btn more", id: "more-images", text: `${left} more…`, onclick: loadMoreImages });
}

async function loadImages(selectId) {
  S.images = await fetchImages(0);
  const g = $("#gallery");
  g.replaceChildren();
  if (!S.images.length) g.append(el("div", { class: "empty", text: "No images yet: upload one →" }));
  for (const im of S.images) g.append(thumb(im));
  const more = moreButton();
  if (more) g.append(more);
  g.dataset.count = String(S.images.length);
  if (selectId) await selectImage(selectId);
}

async function loadMoreImages() {
  if (S.imagesLoading || S.images.length >= S.imagesTotal) return;
  S.imagesLoading = true;
  try {
    const page = await fetchImages(S.images.length);
    const known = new Set(S.images.map((x) => x.id));
    const fresh = page.filter((x) => !known.has(x.id));
    S.images.push(...fresh);
    const g = $("#gallery");
    const old = $("#more-images");
    if (old) old.remove();
    for (const im of fresh) g.append(thumb(im));
    const more = fresh.length ? moreButton() : null;
    if (more) g.append(more);
    g.dataset.count = String(S.images.length);
  } catch (e) {
    status(e.message, true);
  } finally {
    S.imagesLoading = false;
  }
}

async function selectImage(id, name) {
  S.image = id;
  S.camClass = -1;
  S.camOutput = null;
  S.stats = null;
  document.querySelectorAll(".thumb").forEach((t) => t.classList.toggle("active", t.dataset.id === id));
  const im = S.images.find((x) => x.id === id);
  const prev = $("#input-preview");
  prev.src = `${imgBase()}/image.png?size=384`;
  prev.hidden = false;
  $("#input-name").textContent = im ? im.name : (name || id);
  status("Capturing activations…");
  try {
    const p = await (await api(`${imgBase()}/predictions?k=5`)).json();
    S.preds = p;
    renderPredictions(p);
    await loadModel(); // dead-filter counts now include this image
    if (S.layer === null) {
      const first = S.model.layers.find((l) => l.spatial) || S.model.layers[0];
      if (first) await selectLayer(first.index);
    } else {
      await selectLayer(S.layer);
    }
  } catch (e) {
    status(e.message, true);
  }
}

function renderPredictions(p) {
  const ol = $("#predictions");
  ol.replaceChildren();
  if (!p.top.length) { ol.append(el("li", { class: "dim small", text: p.note || "no classifier head" })); return; }
  const groups = [{ output: p.output, top: p.top }, ...(p.others || [])];
  for (const g of groups) {
  if (groups.length > 1) ol.append(el("li", { class: "dim small", text: g.output }));
  for (const t of g.top) {
    const pct = (t.score * 100);
    const li = el("li", { class: "pred", title: `class ${t.index}: click for its CAM`,
      onclick: () => { S.camClass = t.index; S.camOutput = g.output; setView("cam"); } },
      el("span", { class: "label", text: t.label }), el("span", { class: "score", text: `${pct.toFixed(1)}%` }),
      el("div", { class: "bar" }, el("span")));
    li.querySelector(".bar span").style.width = `${Math.max(pct, 0.5)}%`;
    ol.append(li);
  }
  }
  if (!p.probabilities) ol.append(el("li", { class: "dim small", text: "softmax of the raw scores" }));
}

async function upload(file) {
  if (!file) return;
  if (file.size > 10 * 1024 * 1024) { status("That file is over the 10 MB limit.", true); return; }
  const fd = new FormData();
  fd.append("file", file);
  status("Uploading…");
  try {
    const r = await (await api("/api/images", { method: "POST", body: fd })).json();
    await loadImages(r.id);
  } catch (e) {
    status(`Upload refused: ${e.message}`, true);
  }
}

// ------------------------------------------------------------------ layer views
async function selectLayer(index) {
  S.layer = index;
  document.querySelectorAll(".layer").forEach((l) => l.classList.toggle("active", +l.dataset.index === index));
  if (!S.image) { status("Pick an image first."); return; }
  window.__onnxact.layerClickAt = performance.now();
  window.__onnxact.tilesShownAt = null;
  window.__onnxact.tilesShownMs = null;
  render();
  loadStats(index);
}

function render() {
  if (!S.image || S.layer === null) return;
  const token = ++S.renderToken;
  const L = S.model.layers[S.layer];
  $("#tiles").hidden = S.view !== "filters";
  $("#single").hidden = S.view === "filters";
  if (S.view === "filters") renderTiles(L, token);
  else renderSingle(L, token);
}

function tileUrl(ch, scale = 1) {
  return `${imgBase()}/layers/${S.layer}/tiles/${ch}.png?cmap=${S.cmap}&normalize=${S.normalize}` + (scale > 1 ? `&scale=${scale}` : "");
}

function renderPicture(L, token) {
  // 1x1 maps (global pools, squeeze-excite) and 1-D maps: one picture (a bar chart, a channels x
  // time image) as the report draws it, not a grid of identical or hair-thin tiles
  const box = $("#tiles");
  const width = Math.max(200, Math.min(2000, Math.round(box.clientWidth || 720)));
  const img = el("img", { class: "layer-picture", alt: `${L.name}: one value per channel`,
    src: `${imgBase()}/layers/${L.index}/picture.png?cmap=${S.cmap}&normalize=${S.normalize}&width=${width}` });
  const start = performance.now();
  img.addEventListener("load", () => tileLoaded(token, start, L.channels || 0));
  box.replaceChildren(el("div", { class: "picture-box" }, img));
  status(`${L.name} · ${shapeText(L.captured_shape || L.shape)} · ${L.kind === "channels" ? "one value per channel" : "1-D maps"} · loading…`);
}

function renderTiles(L, token) {
  const box = $("#tiles");
  box.replaceChildren();
  box.classList.toggle("as-picture", !!L.kind && L.kind !== "maps");
  if (L.kind && L.kind !== "maps") { renderPicture(L, token); return; }
  const n = L.channels || (S.stats && S.stats.layer === L.index ? S.stats.channels : 0);
  if (!n) { status(`${L.name}: ${shapeText(L.shape)}: nothing to tile`); return; }
  const dims = mapDims(L);
  box.style.setProperty("--aspect", dims && dims[0] && dims[1] ? `${dims[1]} / ${dims[0]}` : "1");
  const bg = `url("${imgBase()}/image.png?size=256")`;
  const frag = document.createDocumentFragment();
  const start = performance.now();
  for (let c = 0; c < n; c++) {
    const img = el("img", { loading: "lazy", decoding: "async", alt: `filter ${c}`, src: tileUrl(c) });
    img.addEventListener("load", () => tileLoaded(token, start, n));
    img.addEventListener("error", () => tileLoaded(token, start, n));
    const t = el("div", { class: `tile${S.overlay ? " smooth" : ""}`, "data-ch": c, tabindex: "0", role: "button",
      "aria-label": `filter ${c}: enlarge, with its top images over the folder`, onclick: () => openModal(c, true),
      onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openModal(c, true); } } },
      img, el("span", { class: "ch", text: `#${c}` }));
    if (S.overlay) t.style.backgroundImage = bg;
    frag.append(t);
  }
  box.append(frag);
  applyOverlay();
  markDead();
  status(`${L.name} · ${L.activation ? L.op_type + "+" + L.activation : L.op_type} · ${shapeText(L.captured_shape || L.shape)} · ${n} filters · loading…`);
}

function visibleTilesDone() {
  const view = $("#view").getBoundingClientRect();
  const imgs = document.querySelectorAll("#tiles .tile img, #tiles .layer-picture");
  let seen = 0;
  for (const img of imgs) {
    const r = img.getBoundingClientRect();
    if (r.bottom < view.top || r.top > view.bottom) { if (seen) break; continue; }
    seen++;
    if (!img.complete) return false;
  }
  return seen > 0;
}

function tileLoaded(token, start, n) {
  if (token !== S.renderToken || window.__onnxact.tilesShownAt !== null) return;
  if (!visibleTilesDone()) return;
  const now = performance.now();
  window.__onnxact.tilesShownAt = now;
  window.__onnxact.tilesShownMs = now - (window.__onnxact.layerClickAt ?? start);
  const L = S.model.layers[S.layer];
  const hint = L.kind && L.kind !== "maps" ? "one picture of the whole layer" : "click a tile to enlarge";
  status(`${L.name} · ${L.activation ? L.op_type + "+" + L.activation : L.op_type} · ${shapeText(L.captured_shape || L.shape)} · ${n} filters · shown in ${Math.round(window.__onnxact.tilesShownMs)} ms · ${hint}`);
  document.body.dataset.tilesReady = String(token);
}

async function blobImage(url, img) {
  const r = await api(url);
  const blob = await r.blob();
  img.src = URL.createObjectURL(blob);
  return r.headers;
}

async function renderSingle(L, token) {
  const box = $("#single");
  const img = el("img", { alt: S.view });
  const cap = el("div", { class: "caption", text: "rendering…" });
  box.replaceChildren(img, cap);
  const alpha = S.opacity.toFixed(2);
  try {
    if (S.view === "heatmap") {
      await blobImage(`${imgBase()}/layers/${S.layer}/heatmap.png?channel=-1&alpha=${alpha}`, img);
      if (token !== S.renderToken) return;
      cap.textContent = `${L.name}: mean of ${L.channels ?? "its"} filter maps over the image (jet, opacity = slider)`;
    } else {
      const out = S.camOutput ? `&output=${encodeURIComponent(S.camOutput)}` : "";
      const h = await blobImage(`/api/images/${S.image}/cam.png?class_index=${S.camClass}&alpha=${alpha}${out}`, img);
      if (token !== S.renderToken) return;
      const cls = h.get("X-Cam-Class");
      const method = h.get("X-Cam-Method") || S.model.cam_method;
      const label = cls !== null && S.model.class_names && S.model.class_names[+cls] ? S.model.class_names[+cls] : (cls !== null ? `class ${cls}` : "");
      const why = h.get("X-Cam-Caption");
      cap.textContent = method === "eigencam"
        ? (why || `EigenCAM on ${h.get("X-Cam-Layer") || "the last spatial layer"} (class-agnostic)`)
        : `Class activation map${label ? " for " + label : ""} on ${h.get("X-Cam-Layer") || "the pooled map"}; click a prediction to switch class`;
    }
    status(S.view === "cam" ? "Class activation map (whole model, not per layer)" : `Heatmap · ${L.name}`);
  } catch (e) {
    cap.textContent = "";
    status(e.message, true);
  }
}

async function loadStats(index) {
  const dl = $("#stats");
  try {
    const s = await (await api(`${imgBase()}/layers/${index}/stats`)).json();
    if (index !== S.layer) return;
    S.stats = s;
    const rows = [["shape", shapeText(s.shape)], ["filters", s.channels], ["min", fmt(s.min)], ["max", fmt(s.max)],
      ["mean", fmt(s.mean)], ["std", fmt(s.std)], ["zeros", `${(s.zero_fraction * 100).toFixed(1)}%`],
      ["dead here", `${s.dead_on_image} / ${s.channels}`]];
    dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
    drawSpark(s.channel_max, s.dead_channels);
    markDead();
    if (S.view === "filters" && !document.querySelector("#tiles .tile") && s.channels) render();
  } catch (e) {
    dl.replaceChildren(el("dt", { class: "dim small", text: e.message }));
  }
}

function drawSpark(values, dead) {
  const isDead = new Set(dead || []);
  const c = $("#spark");
  c.hidden = !values.length;
  const ctx = c.getContext("2d");
  const w = c.width, h = c.height;
  ctx.clearRect(0, 0, w, h);
  const hi = Math.max(...values, 1e-12), lo = Math.min(0, ...values);
  const bw = w / values.length;
  values.forEach((v, i) => {
    const bh = Math.max(1, ((v - lo) / (hi - lo || 1)) * (h - 2));
    ctx.fillStyle = isDead.has(i) ? "#ffb454" : "#5ea1ff";
    ctx.fillRect(i * bw, h - bh, Math.max(bw - (bw > 3 ? 1 : 0), 0.5), bh);
  });
  c.title = `max activation per filter (orange: dead here, max |a| <= ${S.model ? S.model.dead_eps : 0})`;
}

function markDead() {
  if (!S.stats || S.stats.layer !== S.layer || S.stats.image !== S.image) return;
  const dead = new Set(S.stats.dead_channels);
  document.querySelectorAll("#tiles .tile").forEach((t) => t.classList.toggle("dead-tile", dead.has(+t.dataset.ch)));
}

function applyOverlay() {
  const box = $("#tiles");
  box.style.setProperty("--tile-opacity", S.overlay ? String(S.opacity) : "1");
  $("#modal").style.setProperty("--tile-opacity", S.overlay ? String(S.opacity) : "1");
}

// ------------------------------------------------------------------ modal
function openModal(ch, fresh = false) {
  const L = S.model.layers[S.layer];
  const dims = mapDims(L);
  const stage = $("#modal-stage");
  stage.style.setProperty("--aspect", dims ? `${dims[1]} / ${dims[0]}` : "1");
  stage.style.backgroundImage = S.overlay ? `url("${imgBase()}/image.png?size=512")` : "none";
  stage.replaceChildren(el("img", { src: tileUrl(ch, 4), alt: `filter ${ch}` }));
  stage.querySelector("img").style.imageRendering = S.overlay ? "auto" : "pixelated";
  $("#modal-heat").src = `${imgBase()}/layers/${S.layer}/heatmap.png?channel=${ch}&alpha=${Math.min(S.opacity, 0.9).toFixed(2)}`;
  $("#modal-title").textContent = `${L.name} · filter ${ch} of ${L.channels}`;
  const s = S.stats && S.stats.layer === S.layer ? S.stats : null;
  $("#modal-meta").textContent = s ? `max ${fmt(s.channel_max[ch])} · mean ${fmt(s.channel_mean[ch])}${s.dead_channels.includes(ch) ? " · dead on this image" : ""} · ← → to step through filters` : "";
  const wasHidden = $("#modal").hidden;
  $("#modal").hidden = false;
  $("#modal").dataset.ch = ch;
  if (wasHidden) { EX.returnFocus = document.activeElement; $("#modal-close").focus(); }
  showExemplars(S.layer, ch, fresh);
}
const closeModal = () => {
  $("#modal").hidden = true;
  EX.want = null;
  if (EX.returnFocus && document.contains(EX.returnFocus)) EX.returnFocus.focus();
};

// ------------------------------------------------------------------ exemplars: a filter's top images over the folder
// One scan of IMAGES_DIR (POST /api/exemplars) in the background; the panel polls its progress,
// then shows the filter's top crops. The page posts on its first panel and on "Rescan": each POST
// walks the folder again (seconds for 100,000 files, so not on every tile) and the server reuses
// its cached result when no file was added, removed or changed.
const EX = { status: null, lists: new Map(), want: null, timer: null, returnFocus: null, posted: false };

function exStatusText(st) {
  if (st.state === "running") return `Computing the top images of every filter: ${st.done} of ${st.total} images…`;
  if (st.state === "failed" || st.state === "unavailable") return st.error || st.state;
  return "";
}

function exShowStatus(st) {
  $("#ex-title").textContent = st.folder ? `Top images over ${st.folder}` : "Top images";
  const bar = $("#ex-progress");
  bar.hidden = st.state !== "running";
  bar.max = Math.max(st.total, 1);
  bar.value = st.done;
  const s = $("#ex-status");
  s.textContent = exStatusText(st);
  s.classList.toggle("error", st.state === "failed" || st.state === "unavailable");
}

async function showExemplars(layer, ch, fresh) {
  const want = `${layer}/${ch}`;
  EX.want = want;
  clearTimeout(EX.timer);
  const box = $("#exemplars");
  box.dataset.ready = "";
  $("#ex-list").replaceChildren();
  try {
    let st = await (await api("/api/exemplars")).json();
    if (st.state !== "unavailable" && ((fresh && !EX.posted) || st.state === "idle")) {
      st = await (await api("/api/exemplars", { method: "POST" })).json();
      EX.posted = true;
    }
    $("#ex-rescan").hidden = st.state === "unavailable";
    while (EX.want === want && st.state === "running") {
      exShowStatus(st);
      await new Promise((res) => { EX.timer = setTimeout(res, 300); });
      if (EX.want !== want) return;
      st = await (await api("/api/exemplars")).json();
    }
    if (EX.want !== want) return;
    EX.status = st;
    exShowStatus(st);
    if (st.state !== "done") { box.dataset.ready = want; return; }
    const key = `${st.scan}/${want}`;
    let list = EX.lists.get(key);
    if (!list) {
      list = await (await api(`/api/exemplars/layers/${layer}/channels/${ch}`)).json();
      EX.lists.set(key, list);
    }
    if (EX.want !== want) return;
    renderExemplars(list, st);
  } catch (e) {
    if (EX.want !== want) return;
    const s = $("#ex-status");
    s.textContent = e.message;
    s.classList.add("error");
    $("#ex-progress").hidden = true;
  }
  box.dataset.ready = want;
}

function renderExemplars(list, st) {
  const ol = $("#ex-list");
  const num = (v) => (v === null ? "not finite" : fmt(v));
  const items = list.top.map((e) => el("li", { class: "ex-item" },
    el("button", { class: "ex-btn", type: "button", "data-image": e.image, "data-value": String(e.value),
      title: `${e.image}: max ${e.value} at map position ${e.position.join(", ")}; box ${e.box.join(", ")} in image pixels` +
        (e.id ? "; click to open this image" : ""),
      onclick: () => { if (!e.id) return; closeModal(); selectImage(e.id, e.image); } },
      el("img", { src: `/api/exemplars/layers/${list.layer}/channels/${list.channel}/${e.rank}.png?size=160&scan=${st.scan}`,
        alt: `top ${e.rank + 1}: ${e.image}, max ${num(e.value)}`, loading: "lazy" }),
      el("span", { class: "ex-value", text: num(e.value) }),
      el("span", { class: "ex-name", text: e.image.split("/").pop() }))));
  ol.replaceChildren(...items);
  const notes = [`filter ${list.channel}'s highest maxima over ${list.images} image${list.images === 1 ? "" : "s"}`];
  if (list.top.length < st.top) notes.push(`only ${list.top.length} shown: the folder has fewer than ${st.top} usable images`);
  if (list.top.length && list.top.every((e) => e.value !== null && e.value <= 0)) notes.push("this filter never fires on the folder (max ≤ 0 everywhere)");
  if (st.skipped) notes.push(`${st.skipped} unreadable image${st.skipped === 1 ? "" : "s"} skipped`);
  $("#ex-status").textContent = notes.join(" · ");
}

// ------------------------------------------------------------------ wiring
function setView(v) {
  S.view = v;
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === v));
  render();
}

function wire() {
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => setView(t.dataset.view)));
  $("#overlay").addEventListener("change", (e) => { S.overlay = e.target.checked; render(); });
  $("#opacity").addEventListener("input", (e) => { S.opacity = e.target.value / 100; applyOverlay(); });
  $("#opacity").addEventListener("change", () => { if (S.view !== "filters") render(); });
  $("#normalize").addEventListener("change", (e) => { S.normalize = e.target.value; render(); });
  $("#cmap").addEventListener("change", (e) => { S.cmap = e.target.value; render(); });
  $("#tile-size").addEventListener("input", (e) => document.documentElement.style.setProperty("--tile", `${e.target.value}px`));
  $("#upload").addEventListener("change", (e) => upload(e.target.files[0]));
  $("#layer-filter").addEventListener("input", renderLayers);
  $("#gallery").addEventListener("scroll", (e) => {
    const g = e.target;
    if (g.scrollLeft + g.clientWidth >= g.scrollWidth - 200 || g.scrollTop + g.clientHeight >= g.scrollHeight - 200) loadMoreImages();
  });
  $("#modal-close").addEventListener("click", closeModal);
  $("#ex-rescan").addEventListener("click", () => {
    EX.posted = false;
    if (!$("#modal").hidden) showExemplars(S.layer, +$("#modal").dataset.ch, true);
  });
  $("#modal").addEventListener("click", (e) => { if (e.target.id === "modal") closeModal(); });
  document.addEventListener("keydown", (e) => {
    if (!$("#modal").hidden) {
      if (e.key === "Escape") closeModal();
      const n = S.model.layers[S.layer].channels || 0;
      const ch = +$("#modal").dataset.ch;
      if (e.key === "ArrowRight" && ch + 1 < n) openModal(ch + 1);
      if (e.key === "ArrowLeft" && ch > 0) openModal(ch - 1);
      if (e.key === "Tab") { // keep the focus inside the dialog: close button, then the top images
        const f = [...$("#modal").querySelectorAll("button")];
        const i = f.indexOf(document.activeElement);
        const next = e.shiftKey ? (i <= 0 ? f.length - 1 : i - 1) : (i + 1) % f.length;
        e.preventDefault();
        f[next].focus();
      }
      return;
    }
    if (e.target.tagName === "INPUT" || !S.model || S.layer === null) return;
    if (e.key === "ArrowDown" && S.layer + 1 < S.model.layers.length) { e.preventDefault(); selectLayer(S.layer + 1); }
    if (e.key === "ArrowUp" && S.layer > 0) { e.preventDefault(); selectLayer(S.layer - 1); }
  });
}

async function main() {
  wire();
  try {
    await loadModel();
    await loadImages();
    if (!S.images.length) status("No images in the folder: upload one to start.");
  } catch (e) {
    status(`Cannot reach the viewer API: ${e.message}`, true);
  }
}
main();
