// Batch: drop files or a folder; each is uploaded (Files API), one batch transcribes them all (Batch API), at low
// priority; per-file and overall progress, then the results to download.
import { $, busy, curl, el, fillModels, pyStr, python, request, say, showCode, upload } from "./api.js";

const AUDIO = /\.(wav|mp3|flac|ogg|oga|opus|m4a|aac|webm|mp4|mpeg|mpga)$/i;
const POLL_MS = 1000;
let chosen = [], rows = [], resultUrls = [];

function row(file) {
  const bar = el("progress", { max: 1, value: 0, "aria-label": `Progress of ${file.name}` });
  const status = el("td", {}, "waiting"), result = el("td", {});
  const tr = el("tr", {}, el("td", {}, file.webkitRelativePath || file.name), status, el("td", {}, bar), result);
  return { file, tr, bar, status, result };
}

function choose(files) {
  chosen = [...files].filter((f) => AUDIO.test(f.name) || f.type.startsWith("audio/"));
  rows = chosen.map(row);
  $("batch-list").replaceChildren(...rows.map((r) => r.tr));
  say($("batch-state"), `${chosen.length} audio file${chosen.length === 1 ? "" : "s"} chosen`);
}

function snippet(model, format) {
  showCode($("batch-code"), {
    curl: [curl({ method: "POST", path: "/v1/files", form: [["purpose", "user_data"], ["file", "@episode-001.mp3"]] }),
      curl({ method: "POST", path: "/v1/files", form: [["purpose", "batch"], ["file", "@requests.jsonl"]] }),
      curl({ method: "POST", path: "/v1/batches", json: { input_file_id: "file-...", endpoint: "/v1/audio/transcriptions", completion_window: "24h" } }),
      curl({ path: "/v1/batches/batch_..." })].join("\n\n"),
    python: python(`paths = sorted(Path("audio").glob("*.mp3"))
lines = []
for i, path in enumerate(paths):
    audio = client.files.create(file=open(path, "rb"), purpose="user_data")
    lines.append(json.dumps({"custom_id": path.name, "method": "POST", "url": "/v1/audio/transcriptions",
                             "body": {"model": ${pyStr(model)}, "file": audio.id, "response_format": ${pyStr(format)}}}))
requests = client.files.create(file=("requests.jsonl", "\\n".join(lines).encode()), purpose="batch")
batch = client.batches.create(input_file_id=requests.id, endpoint="/v1/audio/transcriptions", completion_window="24h")
while batch.status not in ("completed", "failed", "cancelled", "expired"):
    time.sleep(1)
    batch = client.batches.retrieve(batch.id)
    print(batch.status, batch.request_counts)
for line in client.files.content(batch.output_file_id).text.splitlines():
    result = json.loads(line)
    print(result["custom_id"], result["response"]["body"])
`, "import json\nimport time\nfrom pathlib import Path\n"),
  });
}

async function uploadAll() {
  const ids = [];
  for (const r of rows) {  // one after another: the bars move in order, and the server takes one upload at a time
    r.status.textContent = "uploading";
    const form = new FormData();
    form.append("purpose", "user_data"); form.append("file", r.file, r.file.name);
    const file = await upload("/v1/files", form, (p) => { r.bar.value = p * 0.3; });
    r.bar.value = 0.3; r.status.textContent = "uploaded, queued";
    ids.push(file.id);
  }
  return ids;
}

function showResults(lines) {
  resultUrls.forEach((u) => URL.revokeObjectURL(u));
  resultUrls = [];
  const format = $("batch-format").value, ext = format.includes("json") ? "json" : format === "text" ? "txt" : format;
  for (const line of lines) {
    const r = rows[Number(line.custom_id.slice(5))];
    if (!r) continue;
    const body = line.response && line.response.body, ok = line.response && line.response.status_code < 400;
    r.bar.value = 1;
    r.status.textContent = ok ? "done" : "failed";
    const text = typeof body === "string" ? body : format === "json" || format === "verbose_json" ? JSON.stringify(body, null, 2) : JSON.stringify(body);
    const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
    resultUrls.push(url);
    const preview = ok ? (typeof body === "string" ? body : body.text || "") : (body?.error?.message || line.error?.message || "failed");
    r.result.replaceChildren(el("span", { class: ok ? "" : "error" }, preview.slice(0, 160)), " ",
      el("a", { href: url, download: `${r.file.name.replace(/\.[^.]+$/, "")}.${ext}` }, "download"));
  }
}

async function watch(batch) {
  const overall = $("batch-overall"), counts = $("batch-counts");
  for (;;) {
    const c = batch.request_counts || { total: rows.length, completed: 0, failed: 0 };
    overall.value = c.total ? (c.completed + c.failed) / c.total : 0;
    counts.textContent = `${batch.status}: ${c.completed} done, ${c.failed} failed of ${c.total}`;
    if (batch.status === "in_progress") rows.forEach((r) => { if (r.bar.value < 1) r.status.textContent = "in the batch"; });
    if (["completed", "failed", "cancelled", "expired"].includes(batch.status)) return batch;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    batch = await (await request(`/v1/batches/${batch.id}`)).json();
  }
}

async function download(fileId) {
  return fileId ? (await request(`/v1/files/${fileId}/content`)).text() : "";
}

async function run(event) {
  event.preventDefault();
  const state = $("batch-state"), model = $("batch-model").value, format = $("batch-format").value;
  if (!rows.length) { say(state, "choose or drop audio files first", true); return; }
  snippet(model, format);
  $("batch-download").hidden = true;
  await busy($("batch-go"), state, async () => {
    say(state, "uploading the files…");
    const ids = await uploadAll();
    const jsonl = ids.map((id, i) => JSON.stringify({ custom_id: `item-${i}`, method: "POST",
      url: "/v1/audio/transcriptions", body: { model, file: id, response_format: format } })).join("\n");
    const input = new FormData();
    input.append("purpose", "batch"); input.append("file", new Blob([jsonl], { type: "application/jsonl" }), "requests.jsonl");
    const requests = await upload("/v1/files", input);
    let batch = await (await request("/v1/batches", { method: "POST",
      json: { input_file_id: requests.id, endpoint: "/v1/audio/transcriptions", completion_window: "24h" } })).json();
    say(state, `batch ${batch.id}`);
    batch = await watch(batch);
    const text = (await download(batch.output_file_id)) + (await download(batch.error_file_id));
    const lines = text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
    showResults(lines);
    const link = $("batch-download");
    link.href = URL.createObjectURL(new Blob([text], { type: "application/jsonl" }));
    link.hidden = false;
    say(state, `batch ${batch.id} ${batch.status}`);
  });
}

// Files dropped as a folder: walk its entries (webkitGetAsEntry), keeping the audio.
async function dropped(items) {
  const files = [];
  const walk = async (entry) => {
    if (!entry) return;
    if (entry.isFile) files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
    else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child);
      }
    }
  };
  for (const entry of [...items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry())) await walk(entry);
  return files;
}

export function refresh() { fillModels($("batch-model"), "stt", "whisper-1").catch((e) => say($("batch-state"), e.message, true)); }

export function init() {
  $("batch-form").addEventListener("submit", run);
  $("batch-files").addEventListener("change", (e) => choose(e.target.files));
  $("batch-folder").addEventListener("change", (e) => choose(e.target.files));
  const zone = $("batch-drop");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault(); zone.classList.remove("over");
    choose(e.dataTransfer.items ? await dropped(e.dataTransfer.items) : e.dataTransfer.files);
  });
  refresh();
}
