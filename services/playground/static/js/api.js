// The API client every section shares: the key, requests, OpenAI-shaped errors, and the copy-ready snippets.

const KEY_STORE = "harmony.apiKey";
export const BASE = location.origin;
export const features = { realtime: false, auth_required: false };  // from /playground/features.json (app.js)

export function apiKey() { return localStorage.getItem(KEY_STORE) || ""; }
export function setApiKey(value) {
  if (value) localStorage.setItem(KEY_STORE, value); else localStorage.removeItem(KEY_STORE);
}

export class ApiError extends Error {
  constructor(status, message, code) { super(message); this.status = status; this.code = code; }
}

function withKey(headers = {}) {
  const key = apiKey();
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`, code = null;
  try {
    const body = await response.json();
    if (body && body.error) { message = `${response.status}: ${body.error.message}`; code = body.error.code; }
  } catch (_) { /* not JSON */ }
  return new ApiError(response.status, message, code);
}

// fetch() with the key; throws ApiError (OpenAI's message) for a status >= 400; returns the Response.
export async function request(path, { method = "GET", json, form, signal, headers } = {}) {
  if (features.auth_required && !apiKey()) throw new ApiError(401, "API keys are on: paste your key in the field at the top", "missing_key");
  const init = { method, signal, headers: withKey(headers) };
  if (json !== undefined) { init.body = JSON.stringify(json); init.headers["Content-Type"] = "application/json"; }
  if (form !== undefined) init.body = form;
  const response = await fetch(BASE + path, init);
  if (!response.ok) throw await failure(response);
  return response;
}

export async function getJson(path) { return (await request(path)).json(); }

// Upload with progress (fetch has no upload progress): XMLHttpRequest, same key and errors.
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    if (features.auth_required && !apiKey()) { reject(new ApiError(401, "API keys are on: paste your key in the field at the top", "missing_key")); return; }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", BASE + path);
    for (const [name, value] of Object.entries(withKey())) xhr.setRequestHeader(name, value);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      if (xhr.status < 400) { resolve(xhr.response); return; }
      const error = xhr.response && xhr.response.error;
      reject(new ApiError(xhr.status, `${xhr.status}: ${error ? error.message : xhr.statusText}`, error && error.code));
    };
    xhr.onerror = () => reject(new ApiError(0, "the connection failed", null));
    xhr.send(form);
  });
}

// ---- shared lists: models and voices, fetched once and refreshed on demand ----
let modelsPromise = null, voicesPromise = null;
export function models(refresh = false) {
  if (refresh || !modelsPromise) modelsPromise = getJson("/v1/models").then((r) => r.data).catch((e) => { modelsPromise = null; throw e; });
  return modelsPromise;
}
export function voices(refresh = false) {
  if (refresh || !voicesPromise) voicesPromise = getJson("/v1/audio/voices").then((r) => r.data).catch((e) => { voicesPromise = null; throw e; });
  if (refresh) voicesPromise.then((list) => document.dispatchEvent(new CustomEvent("voices-changed", { detail: list })), () => {});
  return voicesPromise;
}

// Fill a <select> with the models of one task (aliases after their model).
export async function fillModels(select, task, preferred) {
  const list = (await models()).filter((m) => m.task === task);
  select.replaceChildren(...list.map((m) => new Option(m.alias_of ? `${m.id} → ${m.alias_of}` : m.id, m.id)));
  const pick = list.find((m) => m.id === preferred) || list.find((m) => !m.alias_of && !m.pipeline) || list[0];
  if (pick) select.value = pick.id;
}

// ---- small DOM helpers ----
export function $(id) { return document.getElementById(id); }
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k in node) node[k] = v; else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}
export function say(node, text, isError = false) {
  node.textContent = text; node.classList.toggle("error", isError);
}
// Run an action with its button disabled and errors shown in ``status`` (never thrown to the console).
export async function busy(button, status, action) {
  if (button) button.disabled = true;
  try { return await action(); }
  catch (error) { say(status, error.message || String(error), true); return undefined; }
  finally { if (button) button.disabled = false; }
}

// ---- copy-ready snippets: curl and the official openai SDK ----
const shellQuote = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
export const pyStr = (s) => JSON.stringify(String(s));
const pyValue = (v) => (typeof v === "boolean" ? (v ? "True" : "False") : typeof v === "number" ? String(v)
  : Array.isArray(v) ? `[${v.map(pyValue).join(", ")}]` : pyStr(v));
export function pyArgs(obj, indent = "    ") {
  return Object.entries(obj).filter(([, v]) => v !== undefined && v !== "" && v !== null)
    .map(([k, v]) => `${indent}${k}=${v && v.raw ? v.raw : pyValue(v)},`).join("\n");
}
export const raw = (code) => ({ raw: code });

function keyLines() {
  return apiKey() ? { curl: ` \\\n  -H "Authorization: Bearer $HARMONY_API_KEY"`,
    py: `client = OpenAI(base_url=${pyStr(BASE + "/v1")}, api_key=os.environ["HARMONY_API_KEY"])`,
    imports: "import os\n" } : { curl: "", py: `client = OpenAI(base_url=${pyStr(BASE + "/v1")}, api_key="not-needed")`, imports: "" };
}

// curl: method, path, json body or form fields ([name, value] with value "@file" for a file), output file.
export function curl({ method = "GET", path, json, form = [], out, stream = false }) {
  let cmd = `curl -s${stream ? "N" : ""}${method !== "GET" && !json && !form.length ? ` -X ${method}` : ""} ${BASE}${path}${keyLines().curl}`;
  if (json) cmd += ` \\\n  -H 'Content-Type: application/json' \\\n  -d ${shellQuote(JSON.stringify(json))}`;
  for (const [name, value] of form) cmd += ` \\\n  -F ${shellQuote(`${name}=${value}`)}`;
  if (out) cmd += ` \\\n  -o ${shellQuote(out)}`;
  return cmd;
}

// Python: ``body`` is the code after the client is made; ``imports`` any extra import lines.
export function python(body, imports = "") {
  const key = keyLines();
  return `${key.imports}${imports}from openai import OpenAI\n\n${key.py}\n${body}`;
}

// A snippet block: a collapsible with the curl and the Python call, each with a Copy button.
export function showCode(container, { curl: curlText, python: pyText }) {
  const block = (title, text) => {
    const pre = el("pre", {}, el("code", {}, text));
    const copy = el("button", { type: "button", class: "copy secondary", "aria-label": `Copy the ${title} command` }, "Copy");
    copy.addEventListener("click", async () => {
      try { await navigator.clipboard.writeText(text); copy.textContent = "Copied"; }
      catch (_) { getSelection().selectAllChildren(pre); copy.textContent = "Selected: Ctrl+C"; }
      setTimeout(() => { copy.textContent = "Copy"; }, 1500);
    });
    return el("div", { class: "snippet" }, el("h4", {}, title), pre, copy);
  };
  const open = container.querySelector("details")?.open ?? false;
  container.replaceChildren(el("details", { open }, el("summary", {}, "The same call in code: curl and Python"),
    block("curl", curlText), block("Python (openai SDK)", pyText)));
}
