// onnxact notebook widget (anywidget ES module): the kernel computes, this only shows and asks.
// Traits set here: image, layer, channel, view, cmap, normalize, class_index. Traits read:
// model_info, images, picture (PNG data URL), caption, stats, predictions, error.
// A filter grid is one custom message {type: "tiles"} answered with one PNG buffer per filter.

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

const fmt = (v) => (typeof v !== "number" ? String(v)
  : Math.abs(v) >= 1000 || (Math.abs(v) < 0.001 && v !== 0) ? v.toExponential(2) : (+v.toFixed(4)).toString());

function render({ model, el: root }) {
  root.classList.add("onnxact-widget");
  const imageSel = el("select", { "aria-label": "image" });
  const layerSel = el("select", { "aria-label": "layer" });
  const views = ["filters", "heatmap", "cam", "picture"].map((v) =>
    el("button", { "data-view": v, text: v, onclick: () => set({ view: v }) }));
  const mean = el("button", { text: "all filters", onclick: () => set({ channel: -1 }) });
  const bar = el("div", { class: "bar" }, imageSel, layerSel, ...views, mean);
  const error = el("div", { class: "error" });
  const grid = el("div", { class: "grid" });
  const pic = el("img", { class: "picture", alt: "" });
  const caption = el("div", { class: "caption" });
  const stats = el("table", { class: "stats" });
  const preds = el("ol", { class: "preds" });
  root.replaceChildren(bar, error, el("div", { class: "main" }, el("div", {}, grid, pic, caption),
    el("div", { class: "side" }, stats, preds)));
  let urls = [];
  let pending = 0;

  function set(values) {
    for (const [k, v] of Object.entries(values)) model.set(k, v);
    model.save_changes();
  }

  function fillSelects() {
    const info = model.get("model_info") || {};
    imageSel.replaceChildren(...model.get("images").map((im) => el("option", { value: im.id, text: im.name })));
    imageSel.value = model.get("image");
    layerSel.replaceChildren(...(info.layers || []).map((L) => el("option", {
      value: String(L.index),
      text: `${L.index} ${L.name} (${L.activation ? L.op_type + "+" + L.activation : L.op_type})`
        + (L.dead_filters ? ` · ${L.dead_filters} dead` : ""),
    })));
    layerSel.value = String(model.get("layer"));
  }
  imageSel.onchange = () => set({ image: imageSel.value });
  layerSel.onchange = () => set({ layer: Number(layerSel.value), channel: -1 });

  function askTiles() {
    const view = model.get("view");
    grid.hidden = !(view === "filters" && model.get("channel") < 0);
    if (grid.hidden) return;
    pending += 1;
    model.send({ type: "tiles", request: pending, image: model.get("image"), layer: model.get("layer") });
  }

  model.on("msg:custom", (msg, buffers) => {
    if (msg.request !== pending) return; // an older answer
    if (msg.type === "error") { error.textContent = msg.detail; return; }
    urls.forEach((u) => URL.revokeObjectURL(u));
    urls = buffers.map((b) => URL.createObjectURL(new Blob([b], { type: "image/png" })));
    const dead = new Set(msg.dead);
    grid.replaceChildren(...msg.channels.map((c, i) => el("figure",
      { class: dead.has(c) ? "dead" : "", title: `filter ${c}` + (dead.has(c) ? " (dead on this image)" : ""),
        onclick: () => set({ channel: c }) },
      el("img", { src: urls[i], alt: `filter ${c}` }), el("figcaption", { text: String(c) }))));
    if (msg.total > msg.channels.length) grid.append(el("p", { text: `… ${msg.total - msg.channels.length} more` }));
  });

  function show() {
    const view = model.get("view");
    views.forEach((b) => b.classList.toggle("on", b.dataset.view === view));
    error.textContent = model.get("error");
    pic.src = model.get("picture") || "";
    pic.hidden = !model.get("picture");
    caption.textContent = model.get("caption");
    const s = model.get("stats") || {};
    stats.replaceChildren(...["name", "shape", "min", "max", "mean", "std", "zero_fraction", "channels", "dead_on_image"]
      .filter((k) => k in s).map((k) => el("tr", {}, el("th", { text: k.replaceAll("_", " ") }),
        el("td", { text: Array.isArray(s[k]) ? s[k].join("×") : fmt(s[k]) }))));
    const p = model.get("predictions") || {};
    preds.replaceChildren(...(p.top || []).map((t) => el("li", { text: `${t.label} ${fmt(t.score)}` })));
    if (p.note) preds.append(el("li", { text: p.note }));
  }

  model.on("change:model_info", fillSelects);
  model.on("change:images", fillSelects);
  model.on("change:image", () => { imageSel.value = model.get("image"); askTiles(); });
  model.on("change:layer", () => { layerSel.value = String(model.get("layer")); askTiles(); });
  for (const k of ["view", "channel", "cmap", "normalize"]) model.on(`change:${k}`, askTiles);
  for (const k of ["picture", "caption", "stats", "predictions", "error", "view"]) model.on(`change:${k}`, show);
  fillSelects();
  show();
  askTiles();
  return () => urls.forEach((u) => URL.revokeObjectURL(u));
}

export default { render };
