// The operator board: one server-sent event stream (/api/v1/events) pushes a snapshot of the
// queues, agents, callbacks and calls whenever one changes; actions go to the API.
const $ = id => document.getElementById(id);
let token = sessionStorage.getItem("callbackd-token") || "";
let snapshot = null;
const open = new Set();      // confirmation IDs whose history is shown
const histories = {};

function headers() {
  const h = { "Content-Type": "application/json" };
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  const { dataset, ...rest } = attrs || {};
  Object.assign(e, rest);
  Object.assign(e.dataset, dataset || {});
  e.append(...children.filter(c => c !== null && c !== undefined));
  return e;
}

function state(s) { return el("span", { className: "state " + s, textContent: s.replace("_", " ") }); }

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit" });
}

function newcomer(seconds) {
  if (seconds === null || seconds === undefined) return "no agent logged in";
  return seconds === 0 ? "a newcomer is served at once" : `a newcomer waits about ${Math.ceil(seconds / 60)} min`;
}

function renderQueues() {
  $("queues").replaceChildren(...snapshot.queues.map(q => {
    const counts = Object.entries(q.counts).filter(([, n]) => n).map(([s, n]) => `${s} ${n}`).join(", ") || "empty";
    const lines = Object.entries(q.lines).map(([skill, l]) =>
      el("div", { textContent: `${skill}: ${l.waiting} waiting, ${l.agents_ready} ready, ${l.agents_busy} busy; ${newcomer(l.new_arrival.estimated_wait_seconds)}` }));
    return el("div", { className: "card queue", dataset: { queue: q.name } },
      el("b", { textContent: q.name }), el("div", { textContent: counts }), ...lines);
  }));
}

function renderCalls() {
  const sip = snapshot.status.sip || {};
  const calling = snapshot.callbacks.filter(c => c.state === "dialing" || c.state === "connected");
  $("calls").replaceChildren(
    el("div", { className: "card" }, el("b", { textContent: `${sip.calls ?? 0} calls` }),
       el("div", { textContent: `${sip.bridges ?? 0} bridged, ${sip.rtp_ports ?? 0} RTP ports` })),
    ...calling.map(c => el("div", { className: "card" }, el("b", { textContent: c.confirmation_id }), " ", state(c.state),
                           el("div", { textContent: `${c.skill} → ${c.address}` }))));
  // Trunks, and each target as its keep-alives last found it.
  $("trunks").replaceChildren(...(snapshot.trunks || []).map(t => el("div", { className: "card trunk", dataset: { trunk: t.name } },
    el("b", { textContent: t.name }),
    ...(t.targets.length ? t.targets : [{ address: "(not resolved)", state: "down" }]).map(x =>
      el("div", {}, `${x.address} `, state(x.state))))));
}

function renderAgents() {
  $("agents").replaceChildren(...snapshot.agents.map(a => el("tr", { className: "agent", dataset: { agent: a.id } },
    el("td", { textContent: `${a.name} (${a.id})` }),
    el("td", {}, state(a.state), a.reason ? ` ${a.reason}` : ""),
    el("td", { textContent: a.skills.map(s => s.level ? `${s.name} ${s.level}` : s.name).join(", ") }),
    el("td", { textContent: a.address }))));
}

function fill(select, values) {
  const chosen = select.value;
  const first = select.options[0];
  select.replaceChildren(first, ...[...new Set(values)].sort().map(v => el("option", { value: v, textContent: v })));
  select.value = chosen;
}

async function act(id, body) {
  $("message").textContent = "";
  const r = await fetch(`/api/v1/callbacks/${id}/modifications`, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  const json = await r.json();
  if (!r.ok) $("message").textContent = `${id}: ${json.error.message} (receipt ${json.receipt ? json.receipt.code : "none"})`;
  if (open.has(id)) await loadHistory(id);
}

function actions(c) {
  const buttons = [];
  const button = (label, body) => el("button", { type: "button", textContent: label, onclick: e => { e.stopPropagation(); act(c.confirmation_id, body()); } });
  if (["queued", "scheduled"].includes(c.state)) buttons.push(button("Pause", () => ({ action: "pause" })));
  if (c.state === "paused") buttons.push(button("Resume", () => ({ action: "resume" })));
  if (["queued", "scheduled", "paused"].includes(c.state)) {
    const at = el("input", { type: "datetime-local", onclick: e => e.stopPropagation(), ariaLabel: "new time" });
    buttons.push(at, el("button", { type: "button", textContent: "Reschedule", onclick: e => {
      e.stopPropagation();
      act(c.confirmation_id, { action: "reschedule", at: at.value ? new Date(at.value).toISOString() : "asap" });
    } }));
    buttons.push(button("Cancel", () => ({ action: "cancel" })));
  }
  return buttons;
}

async function loadHistory(id) {
  const r = await fetch(`/api/v1/callbacks/${id}`, { headers: headers() });
  if (r.ok) histories[id] = (await r.json()).history;
  renderCallbacks();
}

function renderCallbacks() {
  const f = { state: $("f-state").value, queue: $("f-queue").value, skill: $("f-skill").value, text: $("f-text").value.trim() };
  const rows = [];
  // The list is in dialing order: a queued callback's place is its turn among its skill's.
  const place = {}, seen = {};
  for (const c of snapshot.callbacks) {
    if (c.state !== "queued") continue;
    seen[c.skill] = (seen[c.skill] || 0) + 1;
    place[c.confirmation_id] = seen[c.skill];
  }
  for (const c of snapshot.callbacks) {
    if ((f.state && c.state !== f.state) || (f.queue && c.queue !== f.queue) || (f.skill && c.skill !== f.skill)) continue;
    if (f.text && !c.confirmation_id.includes(f.text) && !c.address.includes(f.text)) continue;
    rows.push(el("tr", { className: "callback", dataset: { id: c.confirmation_id }, onclick: () => {
      open.has(c.confirmation_id) ? open.delete(c.confirmation_id) : open.add(c.confirmation_id);
      open.has(c.confirmation_id) ? loadHistory(c.confirmation_id) : renderCallbacks();
    } },
      el("td", { textContent: c.confirmation_id }), el("td", {}, state(c.state)),
      el("td", { textContent: `${c.queue} / ${c.skill}` }), el("td", {}, `${c.address} (${c.media})`,
        ...(c.unroutable ? [el("span", { className: "unroutable", title: c.unroutable, textContent: ` no route: ${c.unroutable}` })] : [])),
      el("td", { className: "place", textContent: place[c.confirmation_id] ? `${place[c.confirmation_id]} in ${c.skill}` : "" }),
      el("td", { textContent: c.state === "paused" ? "" : when(c.next_attempt_at) }),
      el("td", { textContent: String(c.attempts) }), el("td", {}, ...actions(c))));
    if (open.has(c.confirmation_id) && histories[c.confirmation_id]) {
      const lines = histories[c.confirmation_id].map(h => el("div", { textContent:
        `${when(h.at)} ${h.action} by ${h.channel} ${h.actor}: ${h.outcome}${h.receipt ? ` (receipt ${h.receipt})` : ""}${h.to_state ? ` → ${h.to_state}` : ""}` }));
      rows.push(el("tr", { className: "history" }, el("td", { colSpan: 8 }, ...lines)));
    }
  }
  $("callbacks").replaceChildren(...rows);
}

function render() {
  renderQueues();
  renderCalls();
  renderAgents();
  fill($("f-state"), ["queued", "scheduled", "paused", "dialing", "connected", "completed", "cancelled", "failed", "expired"]);
  fill($("f-queue"), snapshot.queues.map(q => q.name));
  fill($("f-skill"), snapshot.queues.flatMap(q => q.skills));
  renderCallbacks();
}

function connect() {
  const url = "/api/v1/events" + (token ? `?access_token=${encodeURIComponent(token)}` : "");
  const events = new EventSource(url);
  events.addEventListener("snapshot", e => {
    snapshot = JSON.parse(e.data);
    $("live").textContent = "live";
    $("live").className = "on";
    render();
  });
  events.onerror = async () => {
    $("live").textContent = "reconnecting…";
    $("live").className = "";
    const probe = await fetch("/api/v1/status", { headers: headers() }).catch(() => null);
    if (probe && probe.status === 401) {
      events.close();
      $("token").style.display = "flex";
      $("message").textContent = "This board needs the API token.";
    }
  };
}

$("token").onsubmit = e => {
  e.preventDefault();
  token = $("token-value").value.trim();
  sessionStorage.setItem("callbackd-token", token);
  $("token").style.display = "none";
  $("message").textContent = "";
  connect();
};
for (const id of ["f-state", "f-queue", "f-skill", "f-text"]) $(id).oninput = () => snapshot && renderCallbacks();
connect();
