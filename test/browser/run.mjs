// Drives a test page (index.html with @xmpp/client over WebSocket, bosh.html with strophe.js
// over BOSH) in Debian's headless chromium with playwright-core. Usage:
//   node run.mjs <page URL> <peer JID> <reply body>
// Prints one JSON line when the page is online ({"online": jid}), then waits for the first
// message the page receives, answers the peer with the reply body, and prints the final
// state as the last JSON line. Every wait is bounded so a hang fails the Go test.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [pageURL, peer, reply] = process.argv.slice(2);
const STEP = 45000; // a bound per step; a loaded machine starts chromium slowly
const profile = mkdtempSync(join(tmpdir(), "impetus-chromium-"));
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    // The http_listener's certificate is made for the test and trusted by no CA.
    ignoreHTTPSErrors: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--ignore-certificate-errors",
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => process.stderr.write("console: " + m.text() + "\n"));
  page.on("pageerror", (e) => process.stderr.write("pageerror: " + e + "\n"));
  await page.goto(pageURL, { timeout: STEP });
  await page.waitForFunction(() => window.state.online || window.state.errors.length, null, { timeout: STEP });
  let state = await page.evaluate(() => window.state);
  if (!state.online) {
    out({ ok: false, state });
    process.exit(1);
  }
  out({ online: state.online });
  await page.waitForFunction(() => window.state.received.length > 0, null, { timeout: STEP });
  await page.evaluate(([to, body]) => window.sendMessage(to, body), [peer, reply]);
  await page.evaluate(() => window.stopClient());
  state = await page.evaluate(() => window.state);
  out({ ok: true, state });
} catch (err) {
  out({ ok: false, error: String(err) });
  process.exitCode = 1;
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
