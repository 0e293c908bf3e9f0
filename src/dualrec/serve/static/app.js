// The dualrec web page: plain JavaScript against the service's JSON API, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const watched = [];          // [{item, title}] oldest first

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function api(method, path, body, headers) {
  const key = $("api-key").value.trim();  // needed when the server has API keys (--api-key-file)
  const response = await fetch(path, {
    method,
    headers: Object.assign({"Content-Type": "application/json"}, key ? {"Authorization": `Bearer ${key}`} : {},
                           headers || {}),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = data.detail;  // a string, or FastAPI's list of {loc, msg, type}
    const text = Array.isArray(detail) ? detail.map((d) => d.msg).join("; ") : String(detail);
    throw new Error(`${response.status}: ${text}`);
  }
  return data;
}

function renderWatched() {
  const list = $("watched");
  list.replaceChildren(...watched.map((w, i) => {
    const li = document.createElement("li");
    li.textContent = w.title;
    if (!$("user").value) {     // stored events are permanent; an ad-hoc history can be edited
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "remove";
      remove.addEventListener("click", () => { watched.splice(i, 1); renderWatched(); });
      li.appendChild(remove);
    }
    return li;
  }));
  $("watched-count").textContent = String(watched.length);
}

async function pick(item) {
  showError("");
  const user = $("user").value.trim();
  try {
    if (user) {
      await api("POST", `/users/${encodeURIComponent(user)}/events`, {events: [{item: item.item}]},
                {"Idempotency-Key": crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()});
    }
    watched.push(item);
    renderWatched();
  } catch (err) {
    showError(err.message);
  }
}

let searchTimer = null;
async function search() {
  const q = $("search").value.trim();
  try {
    const data = await api("GET", `/items?q=${encodeURIComponent(q)}&limit=20`);
    $("results").replaceChildren(...data.items.map((it) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.item = String(it.item);
      button.textContent = it.title + " ";
      const genres = document.createElement("span");
      genres.className = "genres";
      genres.textContent = it.genres.join(", ");
      button.appendChild(genres);
      button.addEventListener("click", () => pick(it));
      li.appendChild(button);
      return li;
    }));
  } catch (err) {
    showError(err.message);
  }
}

async function recommend() {
  showError("");
  const user = $("user").value.trim();
  const k = Number($("k").value) || 10;
  const model = $("model").value;
  $("recommend").disabled = true;
  try {
    const data = user
      ? await api("GET", `/users/${encodeURIComponent(user)}/recommendations?k=${k}&model=${model}`)
      : await api("POST", "/recommendations", {history: watched.map((w) => w.item), k, model});
    $("recs").replaceChildren(...data.items.map((it) => {
      const li = document.createElement("li");
      li.dataset.item = String(it.item);
      li.textContent = it.title;
      const genres = document.createElement("span");
      genres.className = "genres";
      genres.textContent = " " + it.genres.join(", ");
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = it.score.toFixed(4);
      li.append(genres, score);
      return li;
    }));
    $("lstm-suggestion").textContent = data.lstm_suggestion || "-";
    $("llm-text").textContent = data.llm_text || "-";
    $("fallback").hidden = !data.fallback;
    $("fallback").textContent = data.fallback ? "Fallback: " + data.fallback_reason : "";
    $("meta").textContent = `${data.model}, history of ${data.history_length}, ${data.timings_ms.total} ms`;
    $("answer").hidden = false;
  } catch (err) {
    showError(err.message);
  } finally {
    $("recommend").disabled = false;
  }
}

$("search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(search, 150); });
async function loadUser() {
  // A stored user's history is what the server ranks from: show it, and store new picks as events.
  showError("");
  const user = $("user").value.trim();
  watched.length = 0;
  if (user) {
    try {
      const data = await api("GET", `/users/${encodeURIComponent(user)}/events`);
      watched.push(...data.events);
    } catch (err) {
      showError(err.message);
    }
  }
  renderWatched();
}

$("user").addEventListener("change", loadUser);
$("recommend").addEventListener("click", recommend);

async function markLoadedModels() {
  // Only the models this server loaded can be asked for.
  try {
    const health = await api("GET", "/healthz");
    for (const option of $("model").options) {
      option.disabled = !(option.value in health.models);
      if (option.disabled) option.textContent += " (not loaded)";
    }
  } catch (err) {
    showError(err.message);
  }
}

markLoadedModels();
search();
