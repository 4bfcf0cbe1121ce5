// Audio in the browser: recording from the microphone, decoding, drawing a waveform, WAV files, 16-bit PCM.

let context = null;
export function audioContext() {
  if (!context) context = new AudioContext();
  return context;
}

// A microphone recording with MediaRecorder; ``onStream`` gets the live MediaStream (for a live transcript).
export class Recorder {
  constructor() { this.chunks = []; this.recorder = null; this.stream = null; }
  get recording() { return this.recorder !== null && this.recorder.state === "recording"; }

  async start(onStream) {
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
    const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"].find((t) => MediaRecorder.isTypeSupported(t));
    this.recorder = new MediaRecorder(this.stream, type ? { mimeType: type } : {});
    this.chunks = [];
    this.recorder.ondataavailable = (e) => { if (e.data.size) this.chunks.push(e.data); };
    this.recorder.start(250);
    this.started = performance.now();
    this.liveError = null;
    if (onStream) {
      try { await onStream(this.stream); } catch (error) { this.liveError = error.message; }  // the recording goes on
    }
  }

  // Stops and resolves to a File of the recording (webm/opus or ogg/opus: the engine decodes both).
  stop() {
    return new Promise((resolve) => {
      const recorder = this.recorder;
      recorder.onstop = () => {
        this.stream.getTracks().forEach((t) => t.stop());
        const type = recorder.mimeType || "audio/webm";
        const ext = type.includes("ogg") ? "ogg" : "webm";
        resolve(new File(this.chunks, `recording.${ext}`, { type: type.split(";")[0] }));
        this.recorder = null;
      };
      recorder.stop();
    });
  }
}

// A Record/Stop toggle: ``button`` records into ``onDone(file)``; ``state`` shows the seconds.
export function recordButton(button, state, onDone, onStream) {
  const recorder = new Recorder();
  let timer = null;
  button.setAttribute("aria-pressed", "false");
  button.addEventListener("click", async () => {
    if (!recorder.recording) {
      try { await recorder.start(onStream); }
      catch (error) { state.textContent = `No microphone: ${error.message}`; state.classList.add("error"); return; }
      state.classList.remove("error");
      button.textContent = "Stop"; button.setAttribute("aria-pressed", "true");
      const note = recorder.liveError ? ` (no live transcript: ${recorder.liveError})` : "";
      timer = setInterval(() => { state.textContent = `recording ${((performance.now() - recorder.started) / 1000).toFixed(1)} s${note}`; }, 200);
      return;
    }
    clearInterval(timer);
    button.textContent = "Record"; button.setAttribute("aria-pressed", "false");
    const file = await recorder.stop();
    state.textContent = `recorded ${((performance.now() - recorder.started) / 1000).toFixed(1)} s`;
    onDone(file);
  });
  return recorder;
}

export async function decode(blob) {
  return audioContext().decodeAudioData(await blob.arrayBuffer());
}

// Draw the waveform (min/max per pixel column) and shade ``regions`` ([{start, end}] in seconds).
export function drawWaveform(canvas, buffer, regions = []) {
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  const style = getComputedStyle(document.documentElement);
  g.clearRect(0, 0, width, height);
  g.fillStyle = style.getPropertyValue("--speech");
  for (const r of regions) {
    const x0 = (r.start / buffer.duration) * width, x1 = (r.end / buffer.duration) * width;
    g.fillRect(x0, 0, Math.max(1, x1 - x0), height);
  }
  const data = buffer.getChannelData(0), step = Math.max(1, Math.floor(data.length / width));
  g.strokeStyle = style.getPropertyValue("--fg");
  g.beginPath();
  for (let x = 0; x < width; x++) {
    let lo = 1, hi = -1;
    for (let i = x * step; i < Math.min(data.length, (x + 1) * step); i++) { lo = Math.min(lo, data[i]); hi = Math.max(hi, data[i]); }
    if (lo > hi) break;
    g.moveTo(x + 0.5, (1 - hi) * height / 2); g.lineTo(x + 0.5, (1 - lo) * height / 2 + 1);
  }
  g.stroke();
  g.fillStyle = style.getPropertyValue("--muted");
  g.font = "12px system-ui";
  g.fillText(`${buffer.duration.toFixed(2)} s`, width - 60, height - 6);
}

// 16-bit little-endian mono PCM bytes -> a WAV file (a header in front).
export function wavFromPcm16(parts, sampleRate) {
  const length = parts.reduce((n, p) => n + p.byteLength, 0);
  const header = new DataView(new ArrayBuffer(44));
  const text = (offset, s) => [...s].forEach((c, i) => header.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF"); header.setUint32(4, 36 + length, true); text(8, "WAVE"); text(12, "fmt ");
  header.setUint32(16, 16, true); header.setUint16(20, 1, true); header.setUint16(22, 1, true);
  header.setUint32(24, sampleRate, true); header.setUint32(28, sampleRate * 2, true);
  header.setUint16(32, 2, true); header.setUint16(34, 16, true); text(36, "data"); header.setUint32(40, length, true);
  return new Blob([header.buffer, ...parts], { type: "audio/wav" });
}

export function floatToPcm16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) out[i] = Math.max(-1, Math.min(1, samples[i])) * 0x7fff;
  return out;
}

export function base64(bytes) {
  let s = "";
  const view = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < view.length; i += 0x8000) s += String.fromCharCode(...view.subarray(i, i + 0x8000));
  return btoa(s);
}

// The microphone as 24 kHz mono float chunks (an AudioWorklet in a 24 kHz context): ``onChunk(Float32Array)``.
export async function capturePcm(stream, onChunk, sampleRate = 24000) {
  const ctx = new AudioContext({ sampleRate });
  await ctx.audioWorklet.addModule("/playground/static/js/pcm-worklet.js");
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "pcm-tap");
  node.port.onmessage = (e) => onChunk(e.data);
  source.connect(node);
  return () => { source.disconnect(); node.port.onmessage = null; ctx.close(); };
}

export function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / (Math.sqrt(na * nb) || 1);
}
