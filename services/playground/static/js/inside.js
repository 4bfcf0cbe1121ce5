// Look inside: VAD regions on the waveform, speaker embeddings compared, voice conversion toward a voice.
import { $, busy, curl, pyStr, python, request, say, showCode } from "./api.js";
import { cosine, decode, drawWaveform, recordButton } from "./audio.js";
import { fillVoices } from "./speak.js";

let convUrl = null;
const recorded = {};  // a recording made for a file field, by the field's id (choosing a file forgets it)

// A file field that can also take a recording: its Record button (``${id}-record``) fills it.
function recordable(id, button, state, then = () => {}) {
  $(id).addEventListener("change", () => { recorded[id] = null; });
  recordButton($(button), $(state), (file) => { recorded[id] = file; $(id).value = ""; then(); });
}

const chosen = (id) => $(id).files[0] || recorded[id] || null;

const multipart = (path, fields, file, cast = "httpx.Response") => python(
  `result = client.post(\n    ${pyStr(path)},\n    cast_to=${cast},\n    body=${JSON.stringify(fields)},\n    files=[("file", open(${pyStr(file)}, "rb"))],\n    options={"headers": {"Content-Type": "multipart/form-data"}},\n)\n`, "import httpx\n");

async function vad(event) {
  event.preventDefault();
  const state = $("vad-state"), file = chosen("vad-file");
  if (!file) { say(state, "choose a file or record first", true); return; }
  const threshold = $("vad-threshold").value, name = file.name || "speech.webm";
  showCode($("vad-code"), { curl: curl({ method: "POST", path: "/v1/audio/vad", form: [["file", `@${name}`], ["threshold", threshold]] }),
    python: multipart("/audio/vad", { threshold }, name) + "print(result.json()[\"segments\"])\n" });
  await busy(null, state, async () => {
    say(state, "finding speech…");
    const form = new FormData();
    form.append("file", file, name); form.append("threshold", threshold);
    const [buffer, result] = await Promise.all([decode(file), request("/v1/audio/vad", { method: "POST", form }).then((r) => r.json())]);
    const segments = result.segments || [];
    drawWaveform($("vad-canvas"), buffer, segments);
    const speech = segments.reduce((s, r) => s + (r.end - r.start), 0);
    say(state, "");
    $("vad-summary").textContent = `${segments.length} speech region${segments.length === 1 ? "" : "s"}, ${speech.toFixed(2)} s of ${buffer.duration.toFixed(2)} s: `
      + segments.map((r) => `${r.start.toFixed(2)}–${r.end.toFixed(2)}`).join(", ");
  });
}

async function embed(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  return (await (await request("/v1/audio/embeddings", { method: "POST", form })).json()).data[0].embedding;
}

async function compare(event) {
  event.preventDefault();
  const state = $("emb-state"), a = chosen("emb-a"), b = chosen("emb-b");
  if (!a || !b) { say(state, "choose or record two recordings", true); return; }
  showCode($("emb-code"), { curl: curl({ method: "POST", path: "/v1/audio/embeddings", form: [["file", `@${a.name}`]] }),
    python: python(`import numpy as np\n\ndef embed(path):\n    with open(path, "rb") as f:\n        response = client.post("/audio/embeddings", cast_to=httpx.Response, body={},\n                               files=[("file", f)], options={"headers": {"Content-Type": "multipart/form-data"}})\n    return np.array(response.json()["data"][0]["embedding"])\n\na, b = embed(${pyStr(a.name)}), embed(${pyStr(b.name)})\nprint(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))\n`, "import httpx\n") });
  await busy(null, state, async () => {
    say(state, "embedding both…");
    const [ea, eb] = await Promise.all([embed(a), embed(b)]);
    const similarity = cosine(ea, eb);
    say(state, `${ea.length}-value embeddings`);
    $("emb-result").textContent = `cosine similarity ${similarity.toFixed(3)}: ${similarity > 0.8 ? "probably the same speaker" : similarity > 0.65 ? "similar voices" : "different speakers"}`;
  });
}

async function convert(event) {
  event.preventDefault();
  const state = $("conv-state"), file = chosen("conv-file"), voice = $("conv-voice").value, format = $("conv-format").value;
  if (!file) { say(state, "choose or record a recording", true); return; }
  if (!voice) { say(state, "register a voice first (Voices)", true); return; }
  showCode($("conv-code"), { curl: curl({ method: "POST", path: "/v1/audio/conversions", form: [["file", `@${file.name}`], ["voice", voice], ["response_format", format]], out: `converted.${format}` }),
    python: multipart("/audio/conversions", { voice, response_format: format }, file.name) + `open("converted.${format}", "wb").write(result.content)\n` });
  await busy(null, state, async () => {
    say(state, "converting…");
    const form = new FormData();
    form.append("file", file, file.name); form.append("voice", voice); form.append("response_format", format);
    const blob = await (await request("/v1/audio/conversions", { method: "POST", form })).blob();
    if (convUrl) URL.revokeObjectURL(convUrl);
    convUrl = URL.createObjectURL(blob);
    const audio = $("conv-audio"), link = $("conv-download");
    audio.src = convUrl; audio.hidden = false; link.href = convUrl; link.download = `converted.${format}`; link.hidden = false;
    say(state, `${(blob.size / 1024).toFixed(1)} KB`);
  });
}

export function refresh() { fillVoices($("conv-voice"), { registeredOnly: true }).catch(() => {}); }

export function init() {
  $("vad-form").addEventListener("submit", vad);
  recordable("vad-file", "vad-record", "vad-rec-state", () => $("vad-form").requestSubmit());
  recordable("emb-a", "emb-a-record", "emb-a-rec-state");
  recordable("emb-b", "emb-b-record", "emb-b-rec-state");
  recordable("conv-file", "conv-file-record", "conv-file-rec-state");
  $("emb-form").addEventListener("submit", compare);
  $("conv-form").addEventListener("submit", convert);
  document.addEventListener("voices-changed", refresh);
  refresh();
}
