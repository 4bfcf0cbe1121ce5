// A diarized transcript (gpt-4o-transcribe-diarize, response_format=diarized_json) as a timeline of speakers: one
// lane per speaker, each segment a block placed by its start and end over the audio's duration, a legend, and the
// transcript as speaker-labelled paragraphs. A block or a paragraph plays the audio from its start. Segments come
// all at once (diarized_json) or one by one (stream=true: transcript.text.segment events, then .done).
import { el } from "./api.js";

const COLOURS = ["#3b7dd8", "#d9822b", "#2f9e66", "#c2409a", "#8a63d2", "#b8962a", "#1a9a9a", "#d64545"];

const clock = (s) => `${Math.floor(s / 60)}:${(s % 60).toFixed(1).padStart(4, "0")}`;

export class Timeline {
  // ``container``: where it draws; ``audio``: the <audio> element that plays the transcribed file.
  constructor(container, audio) {
    this.audio = audio;
    this.segments = [];
    this.speakers = new Map();  // name -> {colour, lane}
    this.duration = 0;
    this.legend = el("ul", { class: "legend", "aria-label": "Speakers" });
    this.lanes = el("div", { class: "lanes", role: "group", "aria-label": "Timeline of speakers" });
    this.axis = el("div", { class: "axis", "aria-hidden": "true" });  // under the lanes, in the grid's last row
    this.spacer = el("span", { "aria-hidden": "true" });
    this.lanes.append(this.spacer, this.axis);
    this.turns = el("div", { class: "turns", "aria-label": "Transcript by speaker" });
    container.replaceChildren(this.legend, this.lanes, this.turns);
    container.hidden = false;
    this.root = container;
    delete container.dataset.done;
    audio.ontimeupdate = () => this.paint();
    audio.onseeked = audio.ontimeupdate;
    audio.onplay = null;
    if (Number.isFinite(audio.duration)) this.duration = audio.duration;
    else audio.addEventListener("loadedmetadata", () => this.setDuration(audio.duration), { once: true });
  }

  // The audio's length, once known (the file's own, or diarized_json's ``duration``): blocks are laid over it.
  setDuration(seconds) {
    if (!Number.isFinite(seconds) || seconds <= 0) return;
    this.duration = seconds;
    this.layout();
  }

  speaker(name) {
    let found = this.speakers.get(name);
    if (found) return found;
    const colour = COLOURS[this.speakers.size % COLOURS.length];
    const lane = el("div", { class: "lane", role: "group", "aria-label": `${name}'s turns` });
    lane.style.setProperty("--c", colour);
    lane.dataset.speaker = name;
    const label = el("span", { class: "lane-name" }, name);
    label.style.setProperty("--c", colour);
    this.spacer.before(label, lane);
    const item = el("li", {}, el("span", { class: "swatch", "aria-hidden": "true" }), name);
    item.style.setProperty("--c", colour);
    this.legend.append(item);
    found = { colour, lane };
    this.speakers.set(name, found);
    return found;
  }

  // One segment ({id, speaker, start, end, text}): its block in its speaker's lane, its words in the transcript.
  add(segment) {
    const { colour, lane } = this.speaker(segment.speaker);
    const when = `${clock(segment.start)} to ${clock(segment.end)}`;
    const block = el("button", { type: "button", class: "block", title: `${segment.speaker}, ${when}: ${segment.text}`,
      "aria-label": `${segment.speaker}, ${when}: play from here`, onclick: () => this.play(segment.start) });
    Object.assign(block.dataset, { speaker: segment.speaker, start: segment.start, end: segment.end, id: segment.id });
    lane.append(block);
    this.segments.push({ ...segment, block });
    this.paragraph(segment, colour);
    this.layout();
  }

  // Consecutive segments of one speaker make one paragraph; its label plays from the paragraph's first segment.
  paragraph(segment, colour) {
    const last = this.turns.lastElementChild;
    if (last && last.dataset.speaker === segment.speaker) {
      last.querySelector(".said").append(` ${segment.text.trim()}`);
      return;
    }
    const who = el("button", { type: "button", class: "who", "aria-label": `${segment.speaker} at ${clock(segment.start)}: play from here` },
      segment.speaker, el("small", {}, ` ${clock(segment.start)}`));
    const p = el("p", { onclick: () => this.play(segment.start) }, who, " ", el("span", { class: "said" }, segment.text.trim()));
    p.style.setProperty("--c", colour);
    Object.assign(p.dataset, { speaker: segment.speaker, start: segment.start });
    this.turns.append(p);
  }

  layout() {
    const end = Math.max(this.duration, ...this.segments.map((s) => s.end), 0.001);
    for (const s of this.segments) {
      s.block.style.left = `${(100 * s.start) / end}%`;
      s.block.style.width = `${(100 * Math.max(s.end - s.start, 0)) / end}%`;
    }
    this.axis.replaceChildren(el("span", {}, "0:00"), el("span", {}, clock(end)));
  }

  play(start) {
    this.audio.currentTime = start;
    this.audio.play().catch(() => { /* the user may not have allowed playback yet: the seek stands */ });
  }

  paint() {
    const t = this.audio.currentTime;
    for (const s of this.segments) s.block.classList.toggle("now", t >= s.start && t < s.end);
  }

  // The answer is complete: ``duration`` from diarized_json (streams leave it to the audio element).
  done(duration) {
    if (duration) this.setDuration(duration);
    this.root.dataset.done = "true";
    this.root.dataset.speakers = String(this.speakers.size);
  }
}

// A streamed answer's server-sent events, each parsed JSON handed to ``onEvent`` as it arrives.
export async function readEvents(response, onEvent) {
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data && data !== "[DONE]") onEvent(JSON.parse(data));
    }
    if (done) return;
  }
}
