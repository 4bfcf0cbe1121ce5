// Transcribe: a file or a recording; a live transcript while recording (the real-time endpoint, when the engine
// has it); text, srt, vtt, verbose_json; with word timestamps the words light up as the audio plays.
import { $, BASE, apiKey, busy, curl, el, fillModels, pyArgs, python, raw, request, say, showCode } from "./api.js";
import { base64, capturePcm, floatToPcm16, recordButton } from "./audio.js";

const LIVE_DRAIN_MS = 60000;
let features = {}, recorded = null, audioUrl = null, live = null;

function fields() {
  const format = $("transcribe-format").value, translate = $("transcribe-translate").checked;
  const words = format === "verbose_json" && $("transcribe-words").checked && !translate;
  return { model: $("transcribe-model").value, response_format: format, language: translate ? "" : $("transcribe-language").value.trim(),
    words, translate };
}

function snippet(f, name) {
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
  if (audioUrl) URL.revokeObjectURL(audioUrl);
  audioUrl = URL.createObjectURL(file);
  const audio = $("transcribe-audio");
  audio.src = audioUrl; audio.hidden = false;
  $("transcribe-words-view").replaceChildren();
  output.textContent = "";
  await busy($("transcribe-go"), state, async () => {
    say(state, "transcribing…");
    const started = performance.now();
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

// ---- the live transcript: OpenAI's Realtime transcription events over a WebSocket ----
// The microphone is tapped at once (24 kHz pcm16) and its chunks wait until the socket opens; a socket that never
// opens costs nothing: the transcript comes after the recording, as it always does.
async function openLive(stream) {
  if (!features.realtime) return;
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
  fillModels($("transcribe-model"), "stt", "whisper-1").catch((e) => say($("transcribe-state"), e.message, true));
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
  recordButton($("transcribe-record"), $("transcribe-rec-state"), (file) => {
    closeLive();
    recorded = file;
    $("transcribe-file").value = "";
    transcribe(file);  // after the recording, the whole file: formats and word timestamps, with or without live
  }, (stream) => openLive(stream));
  refresh();
}
