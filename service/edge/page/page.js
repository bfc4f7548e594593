// The page at / : the models, a canvas to draw on with the classifier's top classes, feature maps and occlusion
// heatmap, the neuron atlas, the generators, the segmenter and the style models. Plain ES module, no build step, no CDN: every
// request goes to this server's own KServe v2 REST door, with the tab's token when the server wants one.

const TOKEN_KEY = "cnnserve-token";
const state = { token: sessionStorage.getItem(TOKEN_KEY) || "", models: [], classifier: null };
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// -- the REST door ---------------------------------------------------------------------------------------------

async function api(path, { method = "GET", body = undefined, headers = {}, as = "json" } = {}) {
  const sent = { ...headers };
  if (state.token) sent.Authorization = `Bearer ${state.token}`;
  const reply = await fetch(path, { method, body, headers: sent });
  if (reply.status === 401) {
    askForToken();
    throw new ApiError(401, "this server needs a token: enter it above");
  }
  if (!reply.ok) {
    let message = reply.statusText;
    try { message = (await reply.json()).error || message; } catch { /* not JSON */ }
    throw new ApiError(reply.status, message);
  }
  return as === "json" ? reply.json() : reply.blob();
}

function inferBody(inputs, outputs) {
  return JSON.stringify({ inputs, outputs: outputs.map((name) => ({ name })) });
}

async function infer(model, inputs, outputs, path = "infer") {
  const reply = await api(`/v2/models/${encodeURIComponent(model.name)}/${path}`, {
    method: "POST", body: inferBody(inputs, outputs), headers: { "Content-Type": "application/json" },
  });
  return Object.fromEntries(reply.outputs.map((o) => [o.name, o]));
}

function askForToken() {
  $("token-form").hidden = false;
  $("token").focus();
}

function say(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

// -- models ----------------------------------------------------------------------------------------------------

function parameter(config, key) {
  const entry = (config.parameters || {})[key];
  return entry ? entry.string_value : undefined;
}

function jsonParameter(config, key, fallback) {
  const value = parameter(config, key);
  try { return value === undefined ? fallback : JSON.parse(value); } catch { return fallback; }
}

async function loadModels() {
  const index = await api("/v2/repository/index", { method: "POST", body: "{}", headers: { "Content-Type": "application/json" } });
  const ready = index.filter((entry) => entry.state === "READY");
  const described = await Promise.all(ready.map(async (entry) => {
    const [config, metadata] = await Promise.all([
      api(`/v2/models/${encodeURIComponent(entry.name)}/config`),
      api(`/v2/models/${encodeURIComponent(entry.name)}`),
    ]);
    return {
      name: entry.name, version: entry.version, config, metadata,
      task: parameter(config, "task") || "",
      provider: parameter(config, "execution_provider") || "",
      labels: jsonParameter(config, "labels", []),
    };
  }));
  state.models = described;
  const rows = index.map((entry) => {
    const model = described.find((m) => m.name === entry.name);
    const cells = [entry.name, entry.version || "", entry.state + (entry.reason ? `: ${entry.reason}` : ""),
      model ? model.task : "", model ? model.provider.replace("ExecutionProvider", "") : ""];
    const row = document.createElement("tr");
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  });
  $("models").tBodies[0].replaceChildren(...rows);
}

function fillSelect(select, models) {
  select.replaceChildren(...models.map((m) => new Option(m.name, m.name)));
}

// -- drawing and classifying -----------------------------------------------------------------------------------

function imageInput(model) {
  const input = model.metadata.inputs[0];
  const [, channels, height, width] = input.shape;
  return { name: input.name, channels, height, width };
}

function setUpCanvas() {
  const canvas = $("draw");
  const pen = canvas.getContext("2d", { willReadFrequently: true });  // read back on every stroke
  const clear = () => { pen.fillStyle = "#000"; pen.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let last = null;
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
  };
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    last = at(event);
    stroke(pen, last, last);
    classifySoon();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (last === null) return;
    const point = at(event);
    stroke(pen, last, point);
    last = point;
    classifySoon();
  });
  const lift = () => {
    if (last === null) return;
    last = null;
    classifySoon(true);
  };
  canvas.addEventListener("pointerup", lift);
  canvas.addEventListener("pointercancel", lift);
  $("clear").addEventListener("click", () => {
    clear();
    $("topk").replaceChildren();
    $("features").replaceChildren();
    for (const id of ["input-view", "heatmap"]) {
      const view = $(id);
      view.getContext("2d").clearRect(0, 0, view.width, view.height);
    }
    $("explained").textContent = "";
  });
}

function stroke(pen, from, to) {
  pen.strokeStyle = "#fff";
  pen.lineWidth = 18;
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.beginPath();
  pen.moveTo(...from);
  pen.lineTo(...to);
  pen.stroke();
}

// The drawing as the model's pixels: cropped to the ink's square, averaged down to half the model's size and
// upsampled bilinearly, as the training digits (8 x 8 scans, resized to 16 x 16) were made. Null: nothing drawn.
function drawingPixels(height, width) {
  const canvas = $("draw");
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  const size = canvas.width;
  let [x0, y0, x1, y1] = [size, size, -1, -1];
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      if (data[(y * size + x) * 4] > 20) {
        x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
      }
    }
  }
  if (x1 < 0) return null;
  const side = Math.max(x1 - x0, y1 - y0) * 1.1 + 2;
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const coarseH = Math.max(1, Math.floor(height / 2)), coarseW = Math.max(1, Math.floor(width / 2));
  const coarse = new Float32Array(coarseH * coarseW);
  for (let j = 0; j < coarseH; j++) {
    for (let i = 0; i < coarseW; i++) {
      let sum = 0, count = 0;
      const ya = cy - side / 2 + j * side / coarseH, xa = cx - side / 2 + i * side / coarseW;
      for (let y = Math.floor(ya); y < ya + side / coarseH; y++) {
        for (let x = Math.floor(xa); x < xa + side / coarseW; x++) {
          count++;
          if (x >= 0 && y >= 0 && x < size && y < size) sum += data[(y * size + x) * 4] / 255;
        }
      }
      coarse[j * coarseW + i] = count ? sum / count : 0;
    }
  }
  return bilinear(coarse, coarseH, coarseW, height, width);
}

function bilinear(source, sh, sw, th, tw) {  // half-pixel centres, edges clamped (align_corners=False)
  const out = new Float32Array(th * tw);
  for (let y = 0; y < th; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sh / th - 0.5, 0), sh - 1);
    const y0 = Math.floor(fy), y1 = Math.min(y0 + 1, sh - 1), wy = fy - y0;
    for (let x = 0; x < tw; x++) {
      const fx = Math.min(Math.max((x + 0.5) * sw / tw - 0.5, 0), sw - 1);
      const x0 = Math.floor(fx), x1 = Math.min(x0 + 1, sw - 1), wx = fx - x0;
      const top = source[y0 * sw + x0] * (1 - wx) + source[y0 * sw + x1] * wx;
      const bottom = source[y1 * sw + x0] * (1 - wx) + source[y1 * sw + x1] * wx;
      out[y * tw + x] = Math.min(1, top * (1 - wy) + bottom * wy);
    }
  }
  return out;
}

let classifyTimer = null, classifying = false, again = false, explainAfter = false;

function classifySoon(explain = false) {
  explainAfter = explainAfter || explain;
  if (classifyTimer !== null) return;
  classifyTimer = setTimeout(async () => {
    classifyTimer = null;
    if (classifying) { again = true; return; }
    classifying = true;
    const withExplanation = explainAfter;
    explainAfter = false;
    try {
      await classify(withExplanation);
    } catch (error) {
      say(`classify: ${error.message}`, true);
    } finally {
      classifying = false;
      if (again) { again = false; classifySoon(); }
    }
  }, 40);
}

async function classify(withExplanation) {
  const model = state.classifier;
  if (!model) return;
  const { name, channels, height, width } = imageInput(model);
  const pixels = drawingPixels(height, width);
  if (pixels === null) return;
  showPixels($("input-view"), pixels, height, width);
  const data = channels === 1 ? Array.from(pixels) : Array.from({ length: channels }, () => Array.from(pixels)).flat();
  const inputs = [{ name, datatype: "FP32", shape: [1, channels, height, width], data }];
  const labelOutput = model.config.output[0].name;
  const featureNames = (parameter(model.config, "feature_outputs") || "").split(",").filter((n) => n.endsWith(".relu"));
  const outputs = await infer(model, inputs, [labelOutput, ...featureNames]);
  showTopK(outputs[labelOutput].data, model.labels);
  showFeatures(featureNames.map((n) => outputs[n]));
  say(`${model.name}: classified your drawing`);
  if (withExplanation) await explain(model, inputs, height, width);
}

function softmax(scores) {
  const top = Math.max(...scores);
  const exps = scores.map((s) => Math.exp(s - top));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / total);
}

function showTopK(scores, labels) {
  const probabilities = softmax(scores);
  const order = probabilities.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 5);
  $("topk").replaceChildren(...order.map(([p, i], rank) => {
    const item = document.createElement("li");
    item.className = rank === 0 ? "best" : "";
    item.dataset.label = labels[i] ?? String(i);
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = labels[i] ?? String(i);
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${(p * 100).toFixed(1)}%`;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = p.toFixed(3);
    item.append(label, bar, score);
    return item;
  }));
}

function greyImage(context, values, height, width, scale) {
  const image = context.createImageData(width, height);
  for (let k = 0; k < height * width; k++) {
    const v = Math.round(Math.min(1, Math.max(0, values[k] / scale)) * 255);
    image.data.set([v, v, v, 255], k * 4);
  }
  return image;
}

function showPixels(canvas, pixels, height, width) {
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(greyImage(canvas.getContext("2d"), pixels, height, width, 1), 0, 0);
}

function showFeatures(tensors) {
  const layers = tensors.map((tensor) => {
    const [, channels, height, width] = tensor.shape;
    const data = tensor.data;
    const peak = Math.max(1e-6, ...data);  // one scale per layer: a weak channel looks weak
    const block = document.createElement("div");
    block.className = "layer";
    const title = document.createElement("h3");
    title.textContent = `${tensor.name}: ${channels} channels of ${height} x ${width}`;
    const maps = document.createElement("div");
    maps.className = "maps";
    for (let c = 0; c < channels; c++) {
      const canvas = document.createElement("canvas");
      canvas.width = width;
      canvas.height = height;
      canvas.title = `channel ${c}`;
      const plane = data.slice(c * height * width, (c + 1) * height * width);
      canvas.getContext("2d").putImageData(greyImage(canvas.getContext("2d"), plane, height, width, peak), 0, 0);
      maps.append(canvas);
    }
    block.append(title, maps);
    return block;
  });
  $("features").replaceChildren(...layers);
}

async function explain(model, inputs, height, width) {
  const outputs = await infer(model, inputs, ["explanation", "explained_class"], "explain");
  const heat = outputs.explanation.data;
  const explainedClass = outputs.explained_class.data[0];
  $("explained").textContent = `for class ${model.labels[explainedClass] ?? explainedClass}`;
  const canvas = $("heatmap");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const pixels = drawingPixels(height, width);
  const peak = Math.max(1e-6, ...heat.map(Math.abs));
  const image = context.createImageData(width, height);
  for (let k = 0; k < height * width; k++) {
    const grey = pixels[k] * 120;
    const v = heat[k] / peak;  // red where covering the pixel lowers the score, blue where it raises it
    image.data.set([grey + Math.max(0, v) * 135, grey * 0.8, grey + Math.max(0, -v) * 135, 255], k * 4);
  }
  context.putImageData(image, 0, 0);
}

// -- the atlas -------------------------------------------------------------------------------------------------

async function spriteImage(model, file) {
  const blob = await api(atlasPath(model, file), { as: "blob" });
  return createImageBitmap(blob);
}

function atlasPath(model, file) {
  return `/v2/models/${encodeURIComponent(model.name)}/versions/${encodeURIComponent(model.version)}/atlas/${file}`;
}

function tileCanvas(sprite, tile, columns, k) {
  const [th, tw] = tile;
  const canvas = document.createElement("canvas");
  canvas.width = tw;
  canvas.height = th;
  canvas.getContext("2d").drawImage(sprite, (k % columns) * tw, Math.floor(k / columns) * th, tw, th, 0, 0, tw, th);
  return canvas;
}

async function loadAtlas(model) {
  const indexFile = parameter(model.config, "atlas");
  $("atlas-section").hidden = !indexFile;
  if (!indexFile) return;
  const index = await api(`/v2/models/${encodeURIComponent(model.name)}/versions/${encodeURIComponent(model.version)}/${indexFile}`);
  $("atlas-model").textContent = `${model.name}, version ${model.version}`;
  const layers = await Promise.all(index.layers.map(async (layer) => {
    const [optimised, top] = await Promise.all([
      spriteImage(model, layer.optimised.sprite), spriteImage(model, layer.top.sprite)]);
    const block = document.createElement("div");
    block.className = "layer";
    const title = document.createElement("h3");
    title.textContent = `${layer.layer}: ${layer.channels} channels, receptive field ${layer.receptive_field} px`;
    const grid = document.createElement("div");
    grid.className = "atlas-grid";
    for (const neuron of layer.neurons) {
      const canvas = tileCanvas(optimised, layer.optimised.tile, layer.optimised.columns, neuron.channel);
      canvas.title = `${layer.layer} channel ${neuron.channel}`;
      canvas.dataset.layer = layer.layer;
      canvas.dataset.channel = neuron.channel;
      canvas.addEventListener("click", () => {
        for (const chosen of document.querySelectorAll(".atlas-grid canvas.chosen")) chosen.classList.remove("chosen");
        canvas.classList.add("chosen");
        showNeuron(index, layer, neuron, top);
      });
      grid.append(canvas);
    }
    block.append(title, grid);
    return block;
  }));
  $("atlas").replaceChildren(...layers);
}

function showNeuron(index, layer, neuron, top) {
  $("neuron").hidden = false;
  $("neuron-title").textContent =
    `${layer.layer} channel ${neuron.channel}: its own image reaches ${neuron.optimised_activation.toFixed(2)}`;
  const figures = neuron.top.map((entry, rank) => {
    const figure = document.createElement("figure");
    const k = neuron.channel * index.top_k + rank;
    figure.append(tileCanvas(top, layer.top.tile, layer.top.columns, k));
    const caption = document.createElement("figcaption");
    caption.textContent = `${entry.label}: ${entry.activation.toFixed(2)}`;
    figure.append(caption);
    return figure;
  });
  $("neuron-top").replaceChildren(...figures);
}

// -- generators ------------------------------------------------------------------------------------------------

function gaussians(n) {  // Box-Muller
  const out = [];
  while (out.length < n) {
    const u = 1 - Math.random(), v = Math.random();
    out.push(Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v));
  }
  return out;
}

async function generateImages(model, count, labels) {
  const inputs = model.metadata.inputs.map((input) => {
    if (input.datatype === "INT64") {
      const shape = [count, ...input.shape.slice(1).map(() => 1)];
      return { name: input.name, datatype: "INT64", shape, data: labels };
    }
    const dims = input.shape.slice(1);
    const shape = [count, ...dims];
    return { name: input.name, datatype: "FP32", shape, data: gaussians(count * dims.reduce((a, b) => a * b, 1)) };
  });
  const outputName = model.metadata.outputs[0].name;
  const outputs = await infer(model, inputs, [outputName]);
  return outputs[outputName];
}

function setUpGenerators(generators) {
  $("generate-section").hidden = generators.length === 0;
  if (!generators.length) return;
  fillSelect($("generator"), generators);
  const chooseLabels = () => {
    const model = generators.find((m) => m.name === $("generator").value);
    const conditional = model.metadata.inputs.some((i) => i.datatype === "INT64");
    $("label").hidden = !conditional;
    const labels = model.labels.length ? model.labels : Array.from({ length: 10 }, (_, i) => String(i));
    $("label").replaceChildren(...labels.map((label, i) => new Option(label, String(i))));
  };
  $("generator").onchange = chooseLabels;
  chooseLabels();
  $("generate").onclick = async () => {
    const model = generators.find((m) => m.name === $("generator").value);
    try {
      const label = Number($("label").value || 0);
      const images = await generateImages(model, 16, Array(16).fill(label));
      showGrid($("samples"), images, 4);
      say(`${model.name}: 16 samples`);
    } catch (error) {
      say(`generate: ${error.message}`, true);
    }
  };
}

function showGrid(canvas, tensor, columns) {
  const [n, channels, height, width] = tensor.shape;
  const rows = Math.ceil(n / columns);
  canvas.width = columns * width;
  canvas.height = rows * height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(canvas.width, canvas.height);
  for (let k = 0; k < n; k++) {
    const ox = (k % columns) * width, oy = Math.floor(k / columns) * height;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const rgb = [0, 1, 2].map((c) => tensor.data[((k * channels + Math.min(c, channels - 1)) * height + y) * width + x]);
        image.data.set([...rgb.map((v) => Math.round(Math.min(1, Math.max(0, v)) * 255)), 255],
          ((oy + y) * canvas.width + ox + x) * 4);
      }
    }
  }
  context.putImageData(image, 0, 0);
}

// -- the segmenter ---------------------------------------------------------------------------------------------

const BOX_COLOURS = ["#f2a33a", "#5ec8f2", "#9be36b", "#f26b8a", "#c29bf2", "#f2e35e", "#6bf2c8", "#f28a5e"];

async function segment(model, blob) {
  const path = `/v2/models/${encodeURIComponent(model.name)}/infer`;
  const type = blob.type === "image/jpeg" ? "image/jpeg" : "image/png";
  const [found, mask] = await Promise.all([
    api(path, { method: "POST", body: blob, headers: { "Content-Type": type } }),
    api(`${path}?overlay=0.5`, { method: "POST", body: blob, headers: { "Content-Type": type, Accept: "image/png" }, as: "blob" }),
  ]);
  const picture = await createImageBitmap(mask);
  const canvas = $("scene");
  const scale = Math.max(1, Math.floor(256 / Math.max(picture.width, picture.height)));
  canvas.width = picture.width * scale;
  canvas.height = picture.height * scale;
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage(picture, 0, 0, canvas.width, canvas.height);
  context.font = "12px system-ui";
  const items = found.detections.map((detection, k) => {
    const [x0, y0, x1, y1] = detection.box.map((v) => v * scale);
    context.strokeStyle = context.fillStyle = BOX_COLOURS[k % BOX_COLOURS.length];
    context.lineWidth = 2;
    context.strokeRect(x0, y0, x1 - x0, y1 - y0);
    context.fillText(`${detection.label} ${detection.score.toFixed(2)}`, x0, Math.max(11, y0 - 3));
    const item = document.createElement("li");
    item.textContent = `${detection.label} (${detection.score.toFixed(2)}) at x ${detection.box[0].toFixed(0)}-` +
      `${detection.box[2].toFixed(0)}, y ${detection.box[1].toFixed(0)}-${detection.box[3].toFixed(0)}`;
    return item;
  });
  $("detections").replaceChildren(...items);
  say(`${model.name}: ${items.length} found`);
}

// A scene of 2-4 digits from the conditional generator, scaled and placed without overlap on a 64 x 64 canvas.
async function composeScene(generator) {
  const count = 2 + Math.floor(Math.random() * 3);
  const labels = Array.from({ length: count }, () => Math.floor(Math.random() * 10));
  const images = await generateImages(generator, count, labels);
  const [, , height, width] = images.shape;
  const scene = document.createElement("canvas");
  scene.width = scene.height = 64;
  const context = scene.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, 64, 64);
  context.globalCompositeOperation = "lighter";
  const placed = [];
  for (let k = 0; k < count; k++) {
    const digit = document.createElement("canvas");
    showGrid(digit, { shape: [1, 1, height, width], data: images.data.slice(k * height * width, (k + 1) * height * width) }, 1);
    for (let attempt = 0; attempt < 40; attempt++) {
      const size = 16 + Math.floor(Math.random() * 12);
      const x = Math.floor(Math.random() * (64 - size)), y = Math.floor(Math.random() * (64 - size));
      if (placed.some(([px, py, ps]) => x < px + ps && px < x + size && y < py + ps && py < y + size)) continue;
      placed.push([x, y, size]);
      context.drawImage(digit, x, y, size, size);
      break;
    }
  }
  return new Promise((resolve) => scene.toBlob(resolve, "image/png"));
}

function setUpSegmenter(segmenters, generators) {
  $("segment-section").hidden = segmenters.length === 0;
  if (!segmenters.length) return;
  fillSelect($("segmenter"), segmenters);
  const chosen = () => segmenters.find((m) => m.name === $("segmenter").value);
  $("scene-file").onchange = async (event) => {
    const [file] = event.target.files;
    if (!file) return;
    try { await segment(chosen(), file); } catch (error) { say(`segment: ${error.message}`, true); }
  };
  const conditional = generators.find((m) => m.metadata.inputs.some((i) => i.datatype === "INT64"));
  $("compose").hidden = !conditional;
  $("compose").onclick = async () => {
    try { await segment(chosen(), await composeScene(conditional)); } catch (error) { say(`compose: ${error.message}`, true); }
  };
}

// -- style models: a photo in, the restyled photo (a PNG of its own size) out ----------------------------------

async function stylize(model, blob) {
  const type = blob.type === "image/jpeg" ? "image/jpeg" : "image/png";
  const styled = await api(`/v2/models/${encodeURIComponent(model.name)}/infer`, {
    method: "POST", body: blob, headers: { "Content-Type": type, Accept: "image/png" }, as: "blob",
  });
  for (const [id, image] of [["photo", blob], ["styled", styled]]) {
    const element = $(id);
    if (element.src) URL.revokeObjectURL(element.src);
    element.src = URL.createObjectURL(image);
  }
  await $("styled").decode();
  $("styled").dataset.size = `${$("styled").naturalWidth}x${$("styled").naturalHeight}`;
  say(`${model.name}: restyled ${$("styled").dataset.size}`);
}

function setUpStylizers(stylizers) {
  $("style-section").hidden = stylizers.length === 0;
  if (!stylizers.length) return;
  fillSelect($("stylizer"), stylizers);
  $("photo-file").onchange = async (event) => {
    const [file] = event.target.files;
    if (!file) return;
    try { await stylize(stylizers.find((m) => m.name === $("stylizer").value), file); } catch (error) {
      say(`stylize: ${error.message}`, true);
    }
  };
}

// -- start -----------------------------------------------------------------------------------------------------

function isImageClassifier(model) {
  const input = model.metadata.inputs[0];
  return model.task === "classification" && input && input.shape.length === 4 && input.datatype === "FP32";
}

function start() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);  // this tab only: gone when it closes
    $("token-form").hidden = true;
    load();
  });
  setUpCanvas();
  load();
}

async function load() {
  try {
    await loadModels();
  } catch (error) {
    say(`models: ${error.message}`, true);
    return;
  }
  const classifiers = state.models.filter(isImageClassifier);
  const generators = state.models.filter((m) => m.task.endsWith("generation"));
  const segmenters = state.models.filter((m) => m.task === "segmentation");
  const stylizers = state.models.filter((m) => m.task === "style_transfer");
  $("draw-section").hidden = classifiers.length === 0;
  if (classifiers.length) {
    fillSelect($("classifier"), classifiers);
    const choose = async () => {
      state.classifier = classifiers.find((m) => m.name === $("classifier").value);
      try { await loadAtlas(state.classifier); } catch (error) { say(`atlas: ${error.message}`, true); }
    };
    $("classifier").onchange = choose;
    await choose();
  }
  setUpGenerators(generators);
  setUpSegmenter(segmenters, generators);
  setUpStylizers(stylizers);
  // Something to look at before the first click: a grid of samples, and a composed scene segmented.
  await Promise.all([generators.length && $("generate").onclick(), segmenters.length && !$("compose").hidden &&
    $("compose").onclick()]);
  say(`${state.models.length} models ready`);
  document.body.dataset.ready = "true";
}

start();
