// Status: every model with its readiness, and live charts from the metrics (polled while this tab is shown).
import { $, curl, el, getJson, models, python, say, showCode } from "./api.js";

const POLL_MS = 2000, KEEP = 60;
let timer = null, previous = null;
const series = { requests: [], audio: [], queue: [], batch: [] };

// Prometheus text -> [{name, labels, value}]
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

function sum(samples, name, filter = () => true) {
  return samples.filter((s) => s.name === name && filter(s.labels)).reduce((a, s) => a + s.value, 0);
}

async function readiness() {
  const response = await fetch("/readyz");  // open, like /metrics; 503 while a model loads
  const body = await response.json().catch(() => ({}));
  const list = await models(true);
  const states = body.models || {};
  const ready = Object.values(states).filter((s) => s !== "not ready").length;
  say($("status-ready"), `${body.status === "ready" ? "Ready" : "Not ready"}: ${ready} of ${Object.keys(states).length} models`);
  const aliases = {};
  for (const m of list) if (m.alias_of) (aliases[m.alias_of] ||= []).push(m.id);
  $("status-models").replaceChildren(...list.filter((m) => !m.alias_of).map((m) => {
    const state = m.pipeline ? `pipeline: ${m.pipeline.map((s) => s.model || s.task).join(" → ")}` : states[m.id] || "unknown";
    return el("tr", {}, el("td", {}, m.id), el("td", {}, m.task), el("td", {}, m.backend || "route"),
      el("td", {}, (aliases[m.id] || []).join(", ")), el("td", { class: state === "ready" ? "" : "hint" }, state));
  }));
}

function push(name, value) {
  series[name].push(value);
  if (series[name].length > KEEP) series[name].shift();
}

async function sample() {
  const [routerText, figures] = await Promise.all([(await fetch("/metrics")).text(), getJson("/playground/metrics")]);
  const router = parseMetrics(routerText);
  const now = {
    t: performance.now() / 1000,
    requests: sum(router, "harmony_http_requests_total", (l) => l.route.startsWith("/v1/")),
    audio: 0, queue: 0, items: 0, batches: 0,
  };
  for (const m of Object.values(figures.models)) {
    now.audio += m.audio_seconds; now.queue += m.queue_depth; now.items += m.batch_items; now.batches += m.batches;
  }
  if (previous) {
    const dt = Math.max(0.001, now.t - previous.t);
    push("requests", (now.requests - previous.requests) / dt);
    push("audio", (now.audio - previous.audio) / dt);
    push("queue", now.queue);
    const ran = now.batches - previous.batches;
    push("batch", ran > 0 ? (now.items - previous.items) / ran : 0);
  }
  previous = now;
  draw($("chart-throughput"), [[series.requests, "requests/s"], [series.audio, "audio s/s"]]);
  draw($("chart-queue"), [[series.queue, "waiting"]]);
  draw($("chart-batch"), [[series.batch, "items/batch"]]);
}

// Line charts on a canvas: a shared y scale from 0 to the largest value, the latest values in the legend.
function draw(canvas, lines) {
  const g = canvas.getContext("2d"), { width, height } = canvas, pad = 22;
  const style = getComputedStyle(document.documentElement);
  const colours = [style.getPropertyValue("--accent"), "#d08c2b"];
  const top = Math.max(1, ...lines.flatMap(([values]) => values));
  g.clearRect(0, 0, width, height);
  g.strokeStyle = style.getPropertyValue("--line"); g.fillStyle = style.getPropertyValue("--muted");
  g.font = "11px system-ui";
  g.beginPath(); g.moveTo(pad, 4); g.lineTo(pad, height - pad); g.lineTo(width - 4, height - pad); g.stroke();
  g.fillText(top.toFixed(top < 10 ? 1 : 0), 2, 12); g.fillText("0", 8, height - pad);
  g.fillText(`last ${KEEP * POLL_MS / 1000} s`, width - 70, height - 6);
  lines.forEach(([values, label], i) => {
    g.strokeStyle = colours[i]; g.lineWidth = 2; g.beginPath();
    values.forEach((v, j) => {
      const x = pad + ((KEEP - values.length + j) / (KEEP - 1)) * (width - pad - 6), y = height - pad - (v / top) * (height - pad - 8);
      if (j) g.lineTo(x, y); else g.moveTo(x, y);
    });
    g.stroke(); g.lineWidth = 1;
    g.fillStyle = colours[i];
    g.fillText(`${label} ${values.length ? values[values.length - 1].toFixed(2) : "–"}`, pad + 8 + i * 130, 14);
  });
}

async function tick() {
  try { await sample(); } catch (e) { say($("status-ready"), e.message, true); }
}

export function shown(visible) {
  clearInterval(timer); timer = null;
  if (!visible) return;
  readiness().catch((e) => say($("status-ready"), e.message, true));
  previous = null;
  tick();
  timer = setInterval(tick, POLL_MS);
}

export function refresh() { if (timer) readiness().catch(() => {}); }

export function init() {
  showCode($("status-code"), {
    curl: [curl({ path: "/v1/models" }), "curl -s " + location.origin + "/readyz", "curl -s " + location.origin + "/metrics"].join("\n"),
    python: python("for model in client.models.list():\n    print(model.id, model.model_extra.get(\"task\"), model.model_extra.get(\"alias_of\", \"\"))\n"),
  });
}
