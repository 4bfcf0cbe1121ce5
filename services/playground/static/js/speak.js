// Speak: text to speech, played as it streams (MediaSource for mp3, Web Audio for pcm), and downloadable.
import { $, busy, curl, el, fillModels, pyArgs, python, request, say, showCode, voices } from "./api.js";
import { audioContext, wavFromPcm16 } from "./audio.js";

const PCM_RATE = 24000;
let lastUrl = null;

const LANGUAGE_NAMES = new Intl.DisplayNames(["en"], { type: "language" });
function languageName(code) {
  try { return `${LANGUAGE_NAMES.of(code)} (${code})`; } catch (_) { return code; }
}

// The voices grouped by language (registered voices first), into ``select``; keeps the current choice.
export async function fillVoices(select, { registeredOnly = false } = {}) {
  const list = await voices();
  const previous = select.value;
  const groups = new Map();
  for (const v of list) {
    const group = v.backend === "clone" ? "Registered voices" : languageName(v.languages[0] || "any");
    if (registeredOnly && v.backend !== "clone") continue;
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push(v);
  }
  const names = [...groups.keys()].sort((a, b) => (a === "Registered voices" ? -1 : b === "Registered voices" ? 1 : a.localeCompare(b)));
  select.replaceChildren(...names.map((g) => el("optgroup", { label: g },
    ...groups.get(g).map((v) => { const o = new Option(v.name === v.id ? v.id : `${v.name} (${v.id})`, v.id); o.dataset.model = v.model; return o; }))));
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
  else if ([...select.options].some((o) => o.value === "joe")) select.value = "joe";
}

function snippet(body) {
  const ext = body.response_format;
  showCode($("speak-code"), {
    curl: curl({ method: "POST", path: "/v1/audio/speech", json: body, out: `speech.${ext}` }),
    python: python(`with client.audio.speech.with_streaming_response.create(\n${pyArgs(body)}\n) as response:\n    response.stream_to_file("speech.${ext}")\n`),
  });
}

// mp3 through MediaSource: the audio element plays from the first appended chunk.
async function playMp3(response, audio, onFirst) {
  const source = new MediaSource();
  audio.src = URL.createObjectURL(source);
  await new Promise((resolve) => source.addEventListener("sourceopen", resolve, { once: true }));
  URL.revokeObjectURL(audio.src);  // attached: the element keeps the MediaSource
  const buffer = source.addSourceBuffer("audio/mpeg");
  const parts = [], reader = response.body.getReader();
  const append = (chunk) => new Promise((resolve, reject) => {
    buffer.addEventListener("updateend", resolve, { once: true });
    buffer.addEventListener("error", reject, { once: true });
    buffer.appendBuffer(chunk);
  });
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    await append(value);
    if (parts.length === 1) { onFirst(); audio.play().catch(() => {}); }
  }
  source.endOfStream();
  return new Blob(parts, { type: "audio/mpeg" });
}

// pcm (24 kHz, 16-bit) through Web Audio: each chunk is scheduled right after the previous one.
async function playPcm(response, audio, onFirst) {
  const ctx = audioContext();  // resumed in the click itself (a browser's autoplay rule); never awaited here
  const parts = [], reader = response.body.getReader();
  let at = ctx.currentTime + 0.05, carry = new Uint8Array(0);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    const bytes = new Uint8Array(carry.length + value.length);
    bytes.set(carry); bytes.set(value, carry.length);
    const even = bytes.length - (bytes.length % 2);
    carry = bytes.slice(even);
    const samples = new Int16Array(bytes.buffer.slice(0, even));
    if (!samples.length) continue;
    const chunk = ctx.createBuffer(1, samples.length, PCM_RATE);
    chunk.getChannelData(0).set(Float32Array.from(samples, (s) => s / 32768));
    const node = ctx.createBufferSource();
    node.buffer = chunk; node.connect(ctx.destination);
    at = Math.max(at, ctx.currentTime); node.start(at); at += chunk.duration;
    if (parts.length === 1) onFirst();
  }
  const wav = wavFromPcm16(parts, PCM_RATE);
  audio.src = URL.createObjectURL(wav);  // to replay and seek; the live playback was Web Audio
  return new Blob(parts, { type: "audio/pcm" });
}

async function playWhole(response, audio, onFirst) {
  const blob = await response.blob();
  audio.src = URL.createObjectURL(blob);
  onFirst();
  audio.play().catch(() => {});
  return blob;
}

async function speak(event) {
  event.preventDefault();
  const state = $("speak-state"), audio = $("speak-audio"), link = $("speak-download");
  const body = { model: $("speak-model").value, input: $("speak-text").value, voice: $("speak-voice").value,
    response_format: $("speak-format").value, speed: Number($("speak-speed").value) };
  snippet(body);
  if (body.response_format === "pcm") audioContext().resume().catch(() => {});  // while the click counts as a gesture
  await busy($("speak-go"), state, async () => {
    say(state, "synthesizing…");
    link.hidden = true; audio.dataset.played = "false";
    const started = performance.now();
    const response = await request("/v1/audio/speech", { method: "POST", json: body });
    let first = 0;
    const onFirst = () => { first = performance.now() - started; say(state, `first audio after ${first.toFixed(0)} ms…`); };
    const streamMp3 = body.response_format === "mp3" && window.MediaSource && MediaSource.isTypeSupported("audio/mpeg");
    const play = streamMp3 ? playMp3 : body.response_format === "pcm" ? playPcm : playWhole;
    const blob = await play(response, audio, onFirst);
    if (lastUrl) URL.revokeObjectURL(lastUrl);
    lastUrl = URL.createObjectURL(blob);
    link.href = lastUrl; link.download = `speech.${body.response_format}`; link.hidden = false;
    const voice = response.headers.get("x-harmony-voice") || body.voice;
    say(state, `${(blob.size / 1024).toFixed(1)} KB from ${response.headers.get("x-harmony-model") || body.model} (voice ${voice}); first audio after ${first.toFixed(0)} ms, all after ${(performance.now() - started).toFixed(0)} ms`);
  });
}

export function speakIn(voiceId) {
  const select = $("speak-voice");
  fillVoices(select).then(() => { select.value = voiceId; select.dispatchEvent(new Event("change")); });
  document.dispatchEvent(new CustomEvent("show-section", { detail: "speak" }));
}

export function refresh() {
  fillModels($("speak-model"), "tts", "tts-1").catch((e) => say($("speak-state"), e.message, true));
  fillVoices($("speak-voice")).catch((e) => say($("speak-state"), e.message, true));
}

export function init() {
  $("speak-form").addEventListener("submit", speak);
  const speed = $("speak-speed");
  speed.addEventListener("input", () => { $("speak-speed-out").textContent = `${Number(speed.value).toFixed(2)}×`; });
  $("speak-voice").addEventListener("change", (e) => {
    const model = e.target.selectedOptions[0]?.dataset.model;  // a voice's own model (or the clone route)
    if (model && [...$("speak-model").options].some((o) => o.value === model)) $("speak-model").value = model;
  });
  $("speak-audio").addEventListener("playing", (e) => { e.target.dataset.played = "true"; });
  document.addEventListener("voices-changed", () => fillVoices($("speak-voice")));
  refresh();
}
