// The page: tabs (keyboard and #hash links), the API key field, and each section's setup.
import { $, apiKey, features, getJson, setApiKey } from "./api.js";
import * as speak from "./speak.js";
import * as transcribe from "./transcribe.js";
import * as voices from "./voices.js";
import * as inside from "./inside.js";
import * as batch from "./batch.js";
import * as status from "./status.js";

const SECTIONS = { speak, transcribe, voices, inside, batch, status };

function select(name, focus = false) {
  if (!SECTIONS[name]) name = "speak";
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.dataset.section === name;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    if (on && focus) tab.focus();
    $(tab.dataset.section).hidden = !on;
  }
  for (const [key, section] of Object.entries(SECTIONS)) if (section.shown) section.shown(key === name);
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
}

function setupTabs() {
  const tabs = [...document.querySelectorAll("[role=tab]")];
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab.dataset.section));
    tab.addEventListener("keydown", (e) => {
      const move = { ArrowRight: 1, ArrowLeft: -1, Home: -i, End: tabs.length - 1 - i }[e.key];
      if (move === undefined) return;
      e.preventDefault();
      select(tabs[(i + move + tabs.length) % tabs.length].dataset.section, true);
    });
  });
  window.addEventListener("hashchange", () => select(location.hash.slice(1)));
  document.addEventListener("show-section", (e) => select(e.detail, true));
}

function setupKey() {
  const input = $("api-key");
  input.value = apiKey();
  input.addEventListener("change", () => {
    setApiKey(input.value.trim());
    showHint();
    for (const section of Object.values(SECTIONS)) if (section.refresh) section.refresh();
  });
  showHint();
}

function showHint() {
  $("key-hint").textContent = features.auth_required ? (apiKey() ? "kept in this browser" : "API keys are on: paste yours")
    : "keys are off";
}

async function main() {
  $("base-url").textContent = location.origin + "/v1";
  try { Object.assign(features, await getJson("/playground/features.json")); } catch (_) { /* an older engine */ }
  setupTabs();
  setupKey();
  for (const section of Object.values(SECTIONS)) section.init(features);
  select(location.hash.slice(1) || "speak");
  document.body.dataset.ready = "true";
}

main();
