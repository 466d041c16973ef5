// The pages in a real browser: Debian's headless Chromium driven by playwright-core.
// Usage: node pages.mjs BASE_URL SCREENSHOT_DIR TOKEN (tests/browser_pages.rs runs it against
// a fresh callbackd, with the agent ada ready). /board is opened first, asks for the API token
// as it does an operator, and shows the agent; a
// chat on /chat ends in a booked callback, which appears on the open board with its place and
// its queue's count, without a reload; when it is paused through the API the board shows it
// paused, the state filter finds it alone, and its history shows the pause; an operator
// resumes, reschedules, pauses and cancels it from the board. Prints the confirmation number;
// exits non-zero with the reason when anything is not as expected.
import { chromium } from "playwright-core";

const [base, shots, token] = process.argv.slice(2);
const auth = { Authorization: `Bearer ${token}` };
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const open = async (path) => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  page.setDefaultTimeout(10_000);
  // The page's own complaints go with any failure.
  page.on("console", m => m.type() === "error" && console.error(`${path}: ${m.text()}`));
  page.on("pageerror", e => console.error(`${path} error: ${e.message}`));
  await page.goto(`${base}${path}`);
  return page;
};
try {
  // The operators' board, open before anything is booked.
  const board = await open("/board");
  // The board asks for the API token, as it does an operator.
  await board.locator("#token-value").waitFor();
  await board.fill("#token-value", token);
  await board.getByRole("button", { name: "Use token" }).click();
  const agent = board.locator('tr.agent[data-agent="ada"]');
  await agent.waitFor();
  if (!(await agent.textContent()).includes("ready")) throw new Error("the board does not show the agent ready");

  // The customer's chat.
  const page = await open("/chat");
  const bot = page.locator(".message.bot");
  await bot.first().waitFor();
  const say = async (text) => {
    const before = await bot.count();
    await page.fill("#text", text);
    await page.press("#text", "Enter");
    await page.waitForFunction(n => document.querySelectorAll(".message.bot").length > n, before);
    return (await bot.last().textContent()).trim();
  };
  if (!(await say("When is my bill due?")).startsWith("Bills are due")) throw new Error("the bot did not answer");
  const offer = await say("I was charged twice this month");
  if (!offer.endsWith("Would you like us to call you back?")) throw new Error(`no offer: ${offer}`);
  const before = await bot.count();
  await page.getByRole("button", { name: "Yes, call me back" }).click();
  await page.waitForFunction(n => document.querySelectorAll(".message.bot").length > n, before);
  await say("+1 212 555 0100");
  const booked = await say("now");
  const id = (booked.match(/confirmation number is (\d{9})/) || [])[1];
  if (!id) throw new Error(`no callback booked: ${booked}`);
  await page.screenshot({ path: `${shots}/chat.png` });

  // The booked callback appears on the open board, with its line's count.
  const row = board.locator(`tr.callback[data-id="${id}"]`);
  await row.waitFor();
  if (!(await row.textContent()).includes("queued")) throw new Error("the board does not show the callback queued");
  if ((await row.locator(".place").textContent()) !== "1 in billing") throw new Error("no place in line");
  await board.waitForFunction(() => {
    const q = document.querySelector('.queue[data-queue="support"]');
    return q && q.textContent.includes("billing: 1 waiting, 1 ready");
  });
  const paused = await fetch(`${base}/api/v1/callbacks/${id}/modifications`, {
    method: "POST", headers: { "Content-Type": "application/json", ...auth }, body: JSON.stringify({ action: "pause" }),
  });
  if (!paused.ok) throw new Error(`pausing through the API: ${paused.status}`);
  const boardShows = state => board.waitForFunction(([id, state]) => {
    const r = document.querySelector(`tr.callback[data-id="${id}"]`);
    return r && r.querySelector(".state").textContent === state;
  }, [id, state]);
  await boardShows("paused");
  // The state filter shows it alone among the three callbacks.
  await board.selectOption("#f-state", "paused");
  const shown = await board.locator("tr.callback").evaluateAll(rows => rows.map(r => r.dataset.id));
  if (shown.join() !== id) throw new Error(`the paused filter shows ${shown}`);
  await board.selectOption("#f-state", "");
  if ((await board.locator("tr.callback").count()) !== 3) throw new Error("the filter did not clear");
  await row.click();
  const history = board.locator("tr.history");
  await history.waitFor();
  const told = await history.textContent();
  if (!/created by chat .*pause by api /.test(told)) throw new Error(`the history shows ${told}`);
  await board.screenshot({ path: `${shots}/board.png`, fullPage: true });
  // An operator resumes it from the board.
  await row.getByRole("button", { name: "Resume" }).click();
  await boardShows("queued");
  const stateOf = async () => (await (await fetch(`${base}/api/v1/callbacks/${id}`, { headers: auth })).json()).state;
  if (await stateOf() !== "queued") throw new Error("resumed from the board, the API disagrees");
  if ((await row.locator(".place").textContent()) !== "1 in billing") throw new Error("resumed, not back in its place");
  // Reschedule it to a time, pause it, and cancel it from the board.
  const tomorrow = new Date(Date.now() + 24 * 3600 * 1000);
  const local = new Date(tomorrow.getTime() - tomorrow.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  await row.getByLabel("new time").fill(local);
  await row.getByRole("button", { name: "Reschedule" }).click();
  await boardShows("scheduled");
  await row.getByRole("button", { name: "Pause" }).click();
  await boardShows("paused");
  await row.getByRole("button", { name: "Cancel" }).click();
  await boardShows("cancelled");
  if (await stateOf() !== "cancelled") throw new Error("cancelled from the board, the API disagrees");
  console.log(id);
} finally {
  await browser.close();
}
