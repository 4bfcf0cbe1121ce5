// Voices: register one from an upload or a recording, see its figures, list, delete, speak in one.
import { $, busy, curl, el, getJson, pyStr, python, request, say, showCode, upload, voices } from "./api.js";
import { cosine, recordButton } from "./audio.js";
import { speakIn } from "./speak.js";

let recorded = null;

function figure(label, value) { return el("div", {}, el("b", {}, value), label); }

// Similarity of the new voice to every other registered voice (cosine of the speaker embeddings).
async function similarities(voice) {
  const others = (await voices()).filter((v) => v.backend === "clone" && v.id !== voice.id);
  const rows = await Promise.all(others.slice(0, 6).map(async (v) => {
    const full = await getJson(`/v1/audio/voices/${v.id}`);
    return [v.name, cosine(voice.embedding, full.embedding)];
  }));
  return rows.sort((a, b) => b[1] - a[1]);
}

async function showFigures(voice) {
  const box = $("voices-figures");
  const items = [figure("speech kept", `${voice.speech_seconds.toFixed(1)} s`),
    figure("reference files", String(voice.reference_files)),
    figure(`embedding (${voice.embedding_model})`, `${voice.embedding.length} values`),
    figure("converter", voice.converter)];
  for (const [key, value] of Object.entries(voice)) {  // any similarity figure the engine reports
    if (/similarity/i.test(key) && typeof value === "number") items.push(figure(key.replace(/_/g, " "), value.toFixed(3)));
  }
  box.replaceChildren(...items);
  try {
    for (const [name, value] of await similarities(voice)) box.append(figure(`similarity to ${name}`, value.toFixed(3)));
  } catch (_) { /* the figures above stand */ }
}

async function register(event) {
  event.preventDefault();
  const state = $("voices-state"), name = $("voices-name").value.trim();
  const file = $("voices-file").files[0] || recorded;
  if (!file) { say(state, "choose a reference recording or record one", true); return; }
  const fname = file.name || "reference.webm";
  showCode($("voices-code"), {
    curl: curl({ method: "POST", path: "/v1/audio/voices", form: [["name", name], ["file", `@${fname}`]] }),
    python: python(`voice = client.post(\n    "/audio/voices",\n    cast_to=httpx.Response,\n    body={"name": ${pyStr(name)}},\n    files=[("file", open(${pyStr(fname)}, "rb"))],\n    options={"headers": {"Content-Type": "multipart/form-data"}},\n).json()\nspeech = client.audio.speech.create(model=voice["model"], voice=voice["id"], input="Hello in my own voice.")\nspeech.write_to_file("hello.mp3")\n`, "import httpx\n"),
  });
  const form = new FormData();
  form.append("name", name);
  form.append("file", file, fname);
  await busy($("voices-go"), state, async () => {
    say(state, "uploading…");
    const voice = await upload("/v1/audio/voices", form, (p) => say(state, p < 1 ? `uploading ${(p * 100).toFixed(0)} %` : "analysing the speech…"));
    say(state, `registered ${voice.name} as ${voice.id}`);
    await voices(true);
    await showFigures(voice);
  });
}

async function remove(voice, button) {
  await busy(button, $("voices-state"), async () => {
    await request(`/v1/audio/voices/${voice.id}`, { method: "DELETE" });
    say($("voices-state"), `deleted ${voice.name}`);
    showCode($("voices-code"), { curl: curl({ method: "DELETE", path: `/v1/audio/voices/${voice.id}` }),
      python: python(`client.delete(f"/audio/voices/${voice.id}", cast_to=httpx.Response).raise_for_status()\n`, "import httpx\n") });
    await voices(true);
  });
}

function render(list) {
  const registered = list.filter((v) => v.backend === "clone");
  $("voices-list").replaceChildren(...(registered.length ? registered.map((v) => el("tr", {},
    el("td", {}, v.name), el("td", {}, el("code", {}, v.id)), el("td", {}, `${(v.speech_seconds || 0).toFixed(1)} s`),
    el("td", { class: "actions-cell" },
      el("button", { type: "button", "aria-label": `Speak in ${v.name}`, onclick: () => speakIn(v.id) }, "Speak"), " ",
      el("button", { type: "button", class: "secondary", "aria-label": `Delete ${v.name}`, onclick: (e) => remove(v, e.target) }, "Delete"))))
    : [el("tr", {}, el("td", { colSpan: 4, class: "hint" }, "No registered voice yet."))]));
  const builtin = list.filter((v) => v.backend !== "clone");
  $("voices-builtin-count").textContent = String(builtin.length);
  $("voices-builtin").replaceChildren(...builtin
    .map((v) => el("span", { title: `${v.model}, ${v.sample_rate} Hz` }, `${v.id} · ${v.languages.join(", ")}`)));
}

export function refresh() { voices(true).catch((e) => say($("voices-state"), e.message, true)); }

export function init() {
  $("voices-form").addEventListener("submit", register);
  $("voices-file").addEventListener("change", () => { recorded = null; });
  recordButton($("voices-record"), $("voices-rec-state"), (file) => { recorded = file; $("voices-file").value = ""; });
  document.addEventListener("voices-changed", (e) => render(e.detail));
  voices().then(render, (e) => say($("voices-state"), e.message, true));
}
