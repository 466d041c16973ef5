// The pages in a real browser: Debian's headless Chromium driven by playwright-core.
// Usage: node pages.mjs BASE_URL SCREENSHOT_DIR (tests/browser_pages.rs runs it against a
// fresh callbackd). A chat on /chat ends in a booked callback; /board shows that callback,
// and when it is paused through the API the board shows it paused without a reload; an
// operator resumes, reschedules, pauses and cancels it from the board. Prints
// the confirmation number; exits non-zero with the reason when anything is not as expected.
import { chromium } from "playwright-core";

const [base, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  page.setDefaultTimeout(10_000);
  // The page's own complaints go with any failure.
  page.on("console", m => m.type() === "error" && console.error(`page: ${m.text()}`));
  page.on("pageerror", e => console.error(`page error: ${e.message}`));

  // The customer's chat.
  await page.goto(`${base}/chat`);
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

  // The operators' board.
  await page.goto(`${base}/board`);
  const row = page.locator(`tr.callback[data-id="${id}"]`);
  await row.waitFor();
  if (!(await row.textContent()).includes("queued")) throw new Error("the board does not show the callback queued");
  const paused = await fetch(`${base}/api/v1/callbacks/${id}/modifications`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ action: "pause" }),
  });
  if (!paused.ok) throw new Error(`pausing through the API: ${paused.status}`);
  await page.waitForFunction(id => {
    const r = document.querySelector(`tr.callback[data-id="${id}"]`);
    return r && r.querySelector(".state").textContent === "paused";
  }, id);
  await row.click();
  await page.locator("tr.history").waitFor();
  await page.screenshot({ path: `${shots}/board.png`, fullPage: true });
  // An operator resumes it from the board.
  await row.getByRole("button", { name: "Resume" }).click();
  await page.waitForFunction(id => {
    const r = document.querySelector(`tr.callback[data-id="${id}"]`);
    return r && r.querySelector(".state").textContent === "queued";
  }, id);
  const stateOf = async () => (await (await fetch(`${base}/api/v1/callbacks/${id}`)).json()).state;
  if (await stateOf() !== "queued") throw new Error("resumed from the board, the API disagrees");
  if ((await row.locator(".place").textContent()) !== "1 in billing") throw new Error("no place in line");
  // Reschedule it to a time, pause it, and cancel it from the board.
  const boardShows = state => page.waitForFunction(([id, state]) => {
    const r = document.querySelector(`tr.callback[data-id="${id}"]`);
    return r && r.querySelector(".state").textContent === state;
  }, [id, state]);
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
