// The customer's side of callbackd's chat: POST /api/v1/chat/sessions, then each message to
// /api/v1/chat/sessions/{id}/messages; the bot's replies are shown with any quick answers.
const log = document.getElementById("log");
const input = document.getElementById("text");
let session = null;

function show(text, who) {
  const div = document.createElement("div");
  div.className = "message " + who;
  div.textContent = text;
  log.append(div);
  log.scrollTop = log.scrollHeight;
}

function choices(list) {
  document.querySelectorAll(".choices").forEach(c => c.remove());
  if (!list.length) return;
  const row = document.createElement("div");
  row.className = "choices";
  for (const choice of list) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = choice;
    b.onclick = () => send(choice);
    row.append(b);
  }
  log.append(row);
  log.scrollTop = log.scrollHeight;
}

function replies(body) {
  for (const r of body.replies) show(r.text, "bot");
  choices(body.replies.length ? body.replies[body.replies.length - 1].choices : []);
}

async function post(path, body) {
  const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                body: JSON.stringify(body) });
  const json = await r.json();
  if (!r.ok) throw new Error(json.error ? json.error.message : r.statusText);
  return json;
}

async function start() {
  const body = await post("/api/v1/chat/sessions", {});
  session = body.id;
  replies(body);
}

async function send(text) {
  text = text.trim();
  if (!text) return;
  show(text, "customer");
  choices([]);
  try {
    replies(await post(`/api/v1/chat/sessions/${session}/messages`, { text }));
  } catch (e) {
    if (/no conversation/.test(e.message)) {
      show("This conversation expired; here is a new one.", "error");
      await start();
    } else {
      show(e.message, "error");
    }
  }
}

document.getElementById("send").onsubmit = event => {
  event.preventDefault();
  const text = input.value;
  input.value = "";
  send(text);
};
start().catch(e => show("The chat is not available: " + e.message, "error"));
