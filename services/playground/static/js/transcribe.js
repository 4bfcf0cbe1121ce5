// Transcribe: a file or a recording; a live transcript while recording (the real-time endpoint, when the engine
// has it); text, srt, vtt, verbose_json; with word timestamps the words light up as the audio plays. The diarize
// model (a route of task stt: gpt-4o-transcribe-diarize) answers diarized_json, drawn as a timeline (diarized.js).
import { $, BASE, apiKey, busy, curl, el, fillModels, models, pyArgs, pyStr, python, raw, request, say, showCode } from "./api.js";
import { base64, capturePcm, floatToPcm16, recordButton } from "./audio.js";
import { Timeline, readEvents } from "./diarized.js";

const LIVE_DRAIN_MS = 60000;
const WHISPER_FORMATS = ["verbose_json", "text", "srt", "vtt", "json"], DIARIZE_FORMATS = ["diarized_json", "json", "text"];
let features = {}, recorded = null, audioUrl = null, live = null, diarizeModels = new Set();

const isDiarize = () => diarizeModels.has($("transcribe-model").value);
const count = (id) => { const n = parseInt($(id).value, 10); return Number.isFinite(n) ? n : undefined; };

function fields() {
  const diarize = isDiarize(), format = $("transcribe-format").value;
  const translate = !diarize && $("transcribe-translate").checked;
  const words = format === "verbose_json" && $("transcribe-words").checked && !translate;
  const f = { model: $("transcribe-model").value, response_format: format, language: translate ? "" : $("transcribe-language").value.trim(),
    words, translate, diarize };
  if (diarize) Object.assign(f, { min_speakers: count("transcribe-min-speakers"), max_speakers: count("transcribe-max-speakers"),
    known_speakers: $("transcribe-known").checked ? "registered" : undefined, stream: format === "diarized_json" && $("transcribe-stream").checked });
  return f;
}

// The diarize model's own fields (diarized_json, speakers) shown, Whisper's (word timestamps, translation) hidden.
function modelChanged() {
  const diarize = isDiarize(), select = $("transcribe-format");
  const formats = diarize ? DIARIZE_FORMATS : WHISPER_FORMATS;
  if (select.options.length !== formats.length || select.options[0].value !== formats[0]) {
    select.replaceChildren(...formats.map((name) => new Option(name, name)));
    select.value = formats[0];  // each model's richest answer: verbose_json, diarized_json
  }
  for (const node of document.querySelectorAll("#transcribe-form [data-diarize]")) node.hidden = !diarize;
  for (const node of document.querySelectorAll("#transcribe-form [data-whisper]")) node.hidden = diarize;
}

// The diarize fields as form fields: OpenAI's chunking_strategy (needed past 30 s), the extensions, stream.
function diarizeForm(f) {
  const form = [["chunking_strategy", "auto"]];
  for (const name of ["min_speakers", "max_speakers", "known_speakers"]) if (f[name] !== undefined) form.push([name, String(f[name])]);
  if (f.stream) form.push(["stream", "true"]);
  return form;
}

function snippet(f, name) {
  if (f.diarize) { diarizeSnippet(f, name); return; }
  const path = f.translate ? "/v1/audio/translations" : "/v1/audio/transcriptions";
  const form = [["file", `@${name}`], ["model", f.model], ["response_format", f.response_format]];
  if (f.language) form.push(["language", f.language]);
  if (f.words) form.push(["timestamp_granularities[]", "word"], ["timestamp_granularities[]", "segment"]);
  const args = { model: f.model, file: raw(`open(${JSON.stringify(name)}, "rb")`), response_format: f.response_format,
    language: f.language || undefined, timestamp_granularities: f.words ? ["word", "segment"] : undefined };
  const call = f.translate ? "translations" : "transcriptions";
  showCode($("transcribe-code"), { curl: curl({ method: "POST", path, form }),
    python: python(`result = client.audio.${call}.create(\n${pyArgs(args)}\n)\nprint(result${f.response_format.endsWith("json") ? ".text" : ""})\n`) });
}

// The diarize call: OpenAI's fields as the SDK's arguments, the engine's extensions through extra_body.
function diarizeSnippet(f, name) {
  const form = [["file", `@${name}`], ["model", f.model], ["response_format", f.response_format]];
  if (f.language) form.push(["language", f.language]);
  form.push(...diarizeForm(f));
  const extra = Object.fromEntries(["min_speakers", "max_speakers", "known_speakers"].filter((k) => f[k] !== undefined).map((k) => [k, f[k]]));
  const args = { model: f.model, file: raw(`open(${JSON.stringify(name)}, "rb")`), response_format: f.response_format,
    language: f.language || undefined, chunking_strategy: "auto", stream: f.stream || undefined,
    extra_body: Object.keys(extra).length ? raw(`{${Object.entries(extra).map(([k, v]) => `${pyStr(k)}: ${typeof v === "number" ? v : pyStr(v)}`).join(", ")}}`) : undefined };
  const segments = f.response_format !== "diarized_json" ? `print(result${f.response_format === "json" ? ".text" : ""})\n`
    : f.stream ? `for event in result:\n    if event.type == "transcript.text.segment":\n        print(event.speaker, event.start, event.end, event.text)\n`
      : `for segment in result.segments:\n    print(segment.speaker, segment.start, segment.end, segment.text)\n`;
  showCode($("transcribe-code"), { curl: curl({ method: "POST", path: "/v1/audio/transcriptions", form, stream: f.stream }),
    python: python(`result = client.audio.transcriptions.create(\n${pyArgs(args)}\n)\n${segments}`) });
}

function showWords(words) {
  const view = $("transcribe-words-view"), audio = $("transcribe-audio");
  const spans = words.map((w) => el("span", { title: `${w.start.toFixed(2)}–${w.end.toFixed(2)} s` }, w.word.trim()));
  view.replaceChildren(...spans.flatMap((s) => [s, " "]));
  const paint = () => {
    const t = audio.currentTime;
    words.forEach((w, i) => { spans[i].classList.toggle("now", t >= w.start && t < w.end); spans[i].classList.toggle("spoken", t >= w.end); });
    if (!audio.paused) requestAnimationFrame(paint);
  };
  audio.onplay = paint; audio.onseeked = paint; audio.ontimeupdate = paint;
  spans.forEach((s, i) => s.addEventListener("click", () => { audio.currentTime = words[i].start; audio.play(); }));
}

async function transcribe(file) {
  const f = fields(), state = $("transcribe-state"), output = $("transcribe-output");
  snippet(f, file.name || "speech.wav");
  const form = new FormData();
  form.append("file", file, file.name || "recording.webm");
  form.append("model", f.model);
  form.append("response_format", f.response_format);
  if (f.language && !f.translate) form.append("language", f.language);  // translations take no language (400)
  if (f.words) { form.append("timestamp_granularities[]", "word"); form.append("timestamp_granularities[]", "segment"); }
  if (f.diarize) for (const [name, value] of diarizeForm(f)) form.append(name, value);
  if (audioUrl) URL.revokeObjectURL(audioUrl);
  audioUrl = URL.createObjectURL(file);
  const audio = $("transcribe-audio");
  audio.src = audioUrl; audio.hidden = false;
  audio.onplay = audio.onseeked = audio.ontimeupdate = null;
  $("transcribe-words-view").replaceChildren();
  $("transcribe-diarized").hidden = true;
  output.textContent = "";
  delete output.dataset.text;
  await busy($("transcribe-go"), state, async () => {
    say(state, "transcribing…");
    const started = performance.now();
    if (f.diarize && f.response_format === "diarized_json") {
      await diarized(form, f.stream, output);
      say(state, `done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      return;
    }
    const response = await request(f.translate ? "/v1/audio/translations" : "/v1/audio/transcriptions", { method: "POST", form });
    const text = await response.text();
    let shown = text;
    if (f.response_format.endsWith("json")) {
      const result = JSON.parse(text);
      shown = f.response_format === "json" ? result.text : JSON.stringify(result, null, 2);
      if (result.words && result.words.length) showWords(result.words);
      output.dataset.text = result.text;
    } else output.dataset.text = text;
    output.textContent = shown;
    say(state, `done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  });
}

// diarized_json drawn as a timeline: the whole answer at once, or each transcript.text.segment event as it comes.
async function diarized(form, stream, output) {
  const timeline = new Timeline($("transcribe-diarized"), $("transcribe-audio"));
  const response = await request("/v1/audio/transcriptions", { method: "POST", form });
  if (!stream) {
    const result = await response.json();
    result.segments.forEach((s) => timeline.add(s));
    timeline.done(result.duration);
    output.textContent = JSON.stringify(result, null, 2);
    output.dataset.text = result.text;
    return;
  }
  let failure = null;
  await readEvents(response, (event) => {
    if (event.type === "transcript.text.segment") timeline.add(event);
    else if (event.type === "transcript.text.done") { timeline.done(); output.textContent = event.text; output.dataset.text = event.text; }
    else if (event.error) failure = event.error.message || "the diarization failed";
  });
  if (failure) throw new Error(failure);
}

// ---- the live transcript: OpenAI's Realtime transcription events over a WebSocket ----
// The microphone is tapped at once (24 kHz pcm16) and its chunks wait until the socket opens; a socket that never
// opens costs nothing: the transcript comes after the recording, as it always does.
async function openLive(stream) {
  if (!features.realtime || isDiarize()) return;  // a live transcript is Whisper's; the diarize model answers after
  const box = $("transcribe-live-box"), text = $("transcribe-live");
  const items = new Map(), waiting = [];
  const render = () => { text.textContent = [...items.values()].join(" "); };
  const url = new URL("/v1/realtime", BASE.replace(/^http/, "ws"));
  url.searchParams.set("intent", "transcription");
  if (apiKey()) url.searchParams.set("api_key", apiKey());
  const socket = new WebSocket(url);
  const session = { socket, stop: null, speaking: false, pending: new Set(), closing: false };
  const closeWhenDone = () => { if (session.closing && !session.speaking && !session.pending.size) socket.close(); };
  live = session;
  const send = (chunk) => socket.send(JSON.stringify({ type: "input_audio_buffer.append", audio: base64(floatToPcm16(chunk)) }));
  session.stop = await capturePcm(stream, (chunk) => {
    if (socket.readyState === WebSocket.OPEN) send(chunk);
    else if (socket.readyState === WebSocket.CONNECTING) waiting.push(chunk);
  });
  socket.onopen = () => {
    box.hidden = false; text.textContent = ""; delete text.dataset.done;
    socket.send(JSON.stringify({ type: "transcription_session.update", session: { input_audio_format: "pcm16",
      input_audio_transcription: { model: $("transcribe-model").value }, turn_detection: { type: "server_vad" } } }));
    waiting.splice(0).forEach(send);
  };
  socket.onmessage = (e) => {
    const event = JSON.parse(e.data);
    if (event.type === "input_audio_buffer.speech_started") session.speaking = true;
    else if (event.type === "input_audio_buffer.committed") { session.speaking = false; session.pending.add(event.item_id); }
    else if (event.type === "conversation.item.input_audio_transcription.delta") { items.set(event.item_id, (items.get(event.item_id) || "") + event.delta); render(); }
    else if (event.type === "conversation.item.input_audio_transcription.completed") {
      items.set(event.item_id, event.transcript); render();
      session.pending.delete(event.item_id); closeWhenDone();
    } else if (event.type === "error") {
      say($("transcribe-rec-state"), `live transcript: ${event.error?.message || "error"}`, true);
      session.speaking = false; closeWhenDone();
    }
  };
  session.closeWhenDone = closeWhenDone;
  socket.onclose = () => { if (session.stop) session.stop(); session.stop = null; text.dataset.done = "true"; };
}

function closeLive() {
  if (!live) return;
  const session = live;
  live = null;
  if (session.stop) session.stop();
  session.stop = null;
  if (session.socket.readyState === WebSocket.OPEN) {
    if (session.speaking) session.socket.send(JSON.stringify({ type: "input_audio_buffer.commit" }));  // the last words
    session.closing = true;  // closes once every committed item has its .completed (at most a minute)
    session.closeWhenDone();
    setTimeout(() => session.socket.close(), LIVE_DRAIN_MS);
  } else session.socket.close();
}

export function refresh() {
  fillModels($("transcribe-model"), "stt", "whisper-1").then(async () => {
    diarizeModels = new Set((await models()).filter((m) => m.task === "stt" && m.pipeline).map((m) => m.id));
    modelChanged();
  }).catch((e) => say($("transcribe-state"), e.message, true));
}

export function init(found) {
  features = found;
  $("transcribe-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const file = $("transcribe-file").files[0] || recorded;
    if (!file) { say($("transcribe-state"), "choose a file or record first", true); return; }
    transcribe(file);
  });
  $("transcribe-file").addEventListener("change", () => { recorded = null; });
  $("transcribe-model").addEventListener("change", modelChanged);
  recordButton($("transcribe-record"), $("transcribe-rec-state"), (file) => {
    closeLive();
    recorded = file;
    $("transcribe-file").value = "";
    transcribe(file);  // after the recording, the whole file: formats and word timestamps, with or without live
  }, (stream) => openLive(stream));
  refresh();
}
