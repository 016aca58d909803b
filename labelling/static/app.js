// GeoSeg labelling page: a tiled raster on a canvas, clicks of classes saved through the API,
// the quick map as an overlay and suggested clicks. No libraries: it works offline.
"use strict";

const TILE = 256;
const canvas = document.getElementById("view");
const ctx = canvas.getContext("2d");
const statusLine = document.getElementById("status");
const page = {
  state: null, raster: null, classId: 0, scale: 1, left: 0, top: 0,
  tiles: new Map(), overlay: null, suggestions: [], drag: null,
};

function say(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

async function api(method, url, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new Error("the labelling server does not answer (stopped?); your clicks so far are saved");
  }
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error || message; } catch (err) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

// Raster pixel (row, col) <-> canvas pixel (CSS px).
function toScreen(row, col) { return [(col - page.left) * page.scale, (row - page.top) * page.scale]; }
function toRaster(x, y) { return [y / page.scale + page.top, x / page.scale + page.left]; }

function fit() {
  const r = page.raster;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  page.scale = Math.min(w / r.width, h / r.height);
  page.left = (r.width - w / page.scale) / 2;
  page.top = (r.height - h / page.scale) / 2;
}

function tileImage(level, tx, ty) {
  const key = `${page.raster.name}/${level}/${tx}/${ty}`;
  if (!page.tiles.has(key)) {
    const img = new Image();
    img.onload = draw;
    img.src = `/api/tile/${encodeURIComponent(page.raster.name)}/${level}/${tx}/${ty}.png`;
    page.tiles.set(key, img);
  }
  return page.tiles.get(key);
}

function drawTiles() {
  const r = page.raster;
  const level = Math.max(0, Math.min(r.levels, Math.floor(Math.log2(1 / page.scale))));
  const span = TILE * 2 ** level;
  const [row0, col0] = toRaster(0, 0);
  const [row1, col1] = toRaster(canvas.clientWidth, canvas.clientHeight);
  for (let ty = Math.max(0, Math.floor(row0 / span)); ty * span < Math.min(r.height, row1); ty++) {
    for (let tx = Math.max(0, Math.floor(col0 / span)); tx * span < Math.min(r.width, col1); tx++) {
      const img = tileImage(level, tx, ty);
      if (!img.complete || !img.naturalWidth) continue;
      const [x, y] = toScreen(ty * span, tx * span);
      ctx.drawImage(img, x, y, img.naturalWidth * 2 ** level * page.scale,
                    img.naturalHeight * 2 ** level * page.scale);
    }
  }
}

function classColour(id) {
  const c = page.state.classes[id].color;
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

function draw() {
  if (!page.raster) return;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== canvas.clientWidth * dpr) {
    canvas.width = canvas.clientWidth * dpr;
    canvas.height = canvas.clientHeight * dpr;
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, canvas.clientWidth, canvas.clientHeight);
  ctx.imageSmoothingEnabled = false;
  drawTiles();
  if (page.overlay && page.overlay.raster === page.raster.name) {
    ctx.globalAlpha = document.getElementById("opacity").value / 100;
    const [x, y] = toScreen(0, 0);
    ctx.drawImage(page.overlay.img, x, y, page.overlay.img.naturalWidth * page.overlay.step * page.scale,
                  page.overlay.img.naturalHeight * page.overlay.step * page.scale);
    ctx.globalAlpha = 1;
  }
  for (const s of page.suggestions) {
    const [x, y] = toScreen(s.row, s.col);
    ctx.setLineDash([3, 3]);
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#fff";
    ctx.beginPath(); ctx.arc(x, y, 9, 0, 2 * Math.PI); ctx.stroke();
    ctx.setLineDash([]);
  }
  for (const c of page.state.clicks) {
    if (c.image !== page.raster.name || c.row === null) continue;
    const [x, y] = toScreen(c.row, c.col);
    ctx.fillStyle = classColour(c.class_id);
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(x, y, 6, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
  }
}

function showCounts() {
  const counts = page.state.classes.map(() => 0);
  for (const c of page.state.clicks) counts[c.class_id] += 1;
  document.getElementById("counts").textContent =
    `${page.state.clicks.length} clicks: ` +
    page.state.classes.map((k, i) => `${k.name} ${counts[i]}`).join(", ");
}

function chooseClass(id) {
  page.classId = id;
  document.querySelectorAll(".class").forEach((b) => b.classList.toggle("active", +b.dataset.id === id));
}

function buildSidebar() {
  const select = document.getElementById("raster");
  for (const r of page.state.rasters) select.add(new Option(`${r.name} (${r.width} x ${r.height})`, r.name));
  select.onchange = () => { page.raster = page.state.rasters.find((r) => r.name === select.value);
    page.suggestions = []; fit(); draw(); };
  const box = document.getElementById("classes");
  const legend = document.getElementById("legend");
  page.state.classes.forEach((k, i) => {
    const b = document.createElement("button");
    b.className = "class"; b.id = `class-${i}`; b.dataset.id = i;
    b.innerHTML = `<span class="swatch" style="background:${classColour(i)}"></span>${i + 1}. ${k.name}`;
    b.onclick = () => chooseClass(i);
    box.appendChild(b);
    const row = document.createElement("div");
    row.innerHTML = `<span class="swatch" style="background:${classColour(i)}"></span>${k.name}`;
    legend.appendChild(row);
  });
  document.getElementById("layer").textContent = page.state.layer;
  chooseClass(0);
}

function nearestClick(x, y) {
  let best = null, bestDist = 10;
  for (const c of page.state.clicks) {
    if (c.image !== page.raster.name || c.row === null) continue;
    const [cx, cy] = toScreen(c.row, c.col);
    const d = Math.hypot(cx - x, cy - y);
    if (d < bestDist) { best = c; bestDist = d; }
  }
  return best;
}

async function addClick(x, y) {
  const [row, col] = toRaster(x, y);
  const r = page.raster;
  if (row < 0 || col < 0 || row >= r.height || col >= r.width) return;
  try {
    const click = await (await api("POST", "/api/clicks",
      { image: r.name, row, col, class_id: page.classId })).json();
    page.state.clicks.push(click);
    page.suggestions = page.suggestions.filter((s) => Math.hypot(s.row - click.row, s.col - click.col) > 12 / page.scale);
    say(`saved: ${page.state.classes[click.class_id].name} at row ${Math.floor(click.row)}, column ${Math.floor(click.col)}`);
  } catch (err) { say(err.message, true); }
  showCounts(); draw();
}

async function deleteClick(click) {
  try {
    await api("DELETE", `/api/clicks/${click.id}`);
    page.state.clicks = page.state.clicks.filter((c) => c.id !== click.id);
    say("point deleted");
  } catch (err) { say(err.message, true); }
  showCounts(); draw();
}

async function moveClick(click, x, y) {
  const [row, col] = toRaster(x, y);
  try {
    const moved = await (await api("PUT", `/api/clicks/${click.id}`, { row, col })).json();
    Object.assign(click, moved);
    say("point moved");
  } catch (err) { say(err.message, true); await reload(); }
  draw();
}

async function quickMap() {
  say("fitting the quick map…");
  const t0 = performance.now();
  try {
    await showOverlay(`/api/map/${encodeURIComponent(page.raster.name)}.png`, "quick", () =>
      `quick map (pixel-feature forest, ${page.state.clicks.length} clicks, photo regions; ` +
      `not the GeoSeg network): ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } catch (err) { say(err.message, true); }
}

function showOverlay(url, kind, message) {
  return api("GET", url).then(async (response) => {
    const step = +response.headers.get("X-Step");
    const img = new Image();
    img.onload = () => {
      page.overlay = { raster: page.raster.name, img, step, kind };
      draw();
      say(typeof message === "function" ? message() : message);
    };
    img.src = URL.createObjectURL(await response.blob());
  });
}

async function startJob(url) {
  try {
    const job = await (await api("POST", `${url}?image=${encodeURIComponent(page.raster.name)}`)).json();
    showJob(job);
    pollJob();
  } catch (err) { say(err.message, true); }
}

function showJob(job) {
  const line = document.getElementById("job");
  line.classList.toggle("failed", job.state === "failed");
  if (job.state === "idle") { line.textContent = page.state.model ? `model: ${page.state.model}` : "no GeoSeg model yet"; return; }
  const what = job.kind === "training" ? "training" : "GeoSeg map";
  if (job.state === "running") line.textContent = `${what}: ${job.step} (${job.seconds.toFixed(0)} s) ${job.line}`;
  else if (job.state === "failed") line.textContent = `${what} failed: ${job.error} (log: ${job.log})`;
  else line.textContent = `${what} done in ${job.seconds.toFixed(0)} s`;
}

async function pollJob() {
  let job;
  try { job = await (await api("GET", "/api/job")).json(); } catch (err) { say(err.message, true); return; }
  showJob(job);
  if (job.state === "running") { setTimeout(pollJob, 1000); return; }
  if (job.state === "done") {
    await reload();
    showJob(job);
    try {
      await showOverlay(`/api/model-map/${encodeURIComponent(page.raster.name)}.png`, "model",
                        `GeoSeg map of ${page.raster.name} (model ${page.state.model})`);
    } catch (err) { say(err.message, true); }
  }
}

async function suggest() {
  say("finding where clicks would help…");
  try {
    page.suggestions = await (await api("GET",
      `/api/suggest?image=${encodeURIComponent(page.raster.name)}&count=10`)).json();
    say(`${page.suggestions.length} suggested places (dashed circles): click each with its class`);
  } catch (err) { say(err.message, true); }
  draw();
}

function onPointerDown(event) {
  const x = event.offsetX, y = event.offsetY;
  const hit = nearestClick(x, y);
  page.drag = { x, y, left: page.left, top: page.top, hit, moved: false };
  canvas.setPointerCapture(event.pointerId);
}

function onPointerMove(event) {
  const d = page.drag;
  if (!d) return;
  const dx = event.offsetX - d.x, dy = event.offsetY - d.y;
  if (Math.hypot(dx, dy) > 4) d.moved = true;
  if (!d.moved) return;
  if (d.hit && !event.shiftKey) {
    [d.hit.row, d.hit.col] = toRaster(event.offsetX, event.offsetY);
  } else {
    page.left = d.left - dx / page.scale;
    page.top = d.top - dy / page.scale;
  }
  draw();
}

function onPointerUp(event) {
  const d = page.drag;
  page.drag = null;
  if (!d) return;
  if (!d.moved) {
    if (event.shiftKey) { if (d.hit) deleteClick(d.hit); } else addClick(event.offsetX, event.offsetY);
  } else if (d.hit && !event.shiftKey) {
    moveClick(d.hit, event.offsetX, event.offsetY);
  }
}

function onWheel(event) {
  event.preventDefault();
  const [row, col] = toRaster(event.offsetX, event.offsetY);
  page.scale *= Math.exp(-event.deltaY / 500);
  page.left = col - event.offsetX / page.scale;
  page.top = row - event.offsetY / page.scale;
  draw();
}

async function reload() {
  page.state = await (await api("GET", "/api/state")).json();
  showCounts();
}

async function start() {
  try {
    await reload();
  } catch (err) { say(err.message, true); return; }
  page.raster = page.state.rasters[0];
  buildSidebar();
  fit();
  draw();
  say(`${page.state.clicks.length} clicks so far; pick a class and click the photo`);
  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("pointermove", onPointerMove);
  canvas.addEventListener("pointerup", onPointerUp);
  canvas.addEventListener("wheel", onWheel, { passive: false });
  document.getElementById("quickmap").onclick = quickMap;
  document.getElementById("suggest").onclick = suggest;
  document.getElementById("train").onclick = () => startJob("/api/train");
  document.getElementById("modelmap").onclick = () => startJob("/api/model-map");
  showJob(page.state.job);
  if (page.state.job.state === "running") pollJob();
  document.getElementById("opacity").oninput = draw;
  window.addEventListener("resize", draw);
  window.addEventListener("keydown", (event) => {
    const n = parseInt(event.key, 10);
    if (n >= 1 && n <= page.state.classes.length) chooseClass(n - 1);
  });
}

// For scripts driving the page (the browser test): where a raster pixel is on the canvas.
window.labelling = { toScreen, toRaster, ready: () => page.raster !== null && page.state !== null };
start();
