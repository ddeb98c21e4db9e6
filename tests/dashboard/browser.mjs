// What a person sees: drive the dashboard in headless Chromium (playwright-core + Debian's chromium).
//
//   node tests/dashboard/browser.mjs URL OUTDIR [EXPECTED_TITLE [LATE_TEXT]]
//
// Waits for Streamlit to finish running, then checks that EXPECTED_TITLE (an incident title) is
// shown, that the deck.gl map canvas exists and has drawn something, that the page raised no
// JavaScript error and asked nothing of any host but the dashboard's own (the intranet is
// offline). Prints "ready" and, when LATE_TEXT (e.g. a subject) is given, waits for it to appear without a
// reload (the live fragment's refresh). Then switches the language to English and checks the
// English texts. Saves full-page screenshots to OUTDIR. Exits non-zero on the first failure.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, outdir, expectedTitle = 'Water level above 30 cm', lateText = ''] = process.argv.slice(2);
if (!url || !outdir) {
  console.error('usage: node tests/dashboard/browser.mjs URL OUTDIR [EXPECTED_TITLE [LATE_TEXT]]');
  process.exit(2);
}
mkdirSync(outdir, { recursive: true });
const origin = new URL(url).origin;
const TIMEOUT_MS = 60_000;

const problems = [];
const fail = (message) => {
  throw new Error(message);
};

// Streamlit shows its status widget while a script (or fragment) runs. Idle = not shown as
// running for `quietMs` in a row.
async function waitIdle(page, quietMs = 1500) {
  const deadline = Date.now() + TIMEOUT_MS;
  let quietSince = Date.now();
  while (Date.now() < deadline) {
    const running = await page.evaluate(() => {
      const widget = document.querySelector('[data-testid="stStatusWidget"]');
      return Boolean(widget && /running/i.test(widget.innerText || widget.textContent || ''));
    });
    if (running) quietSince = Date.now();
    else if (Date.now() - quietSince >= quietMs) return;
    await page.waitForTimeout(200);
  }
  fail(`Streamlit still shows "running" after ${TIMEOUT_MS / 1000}s`);
}

// The page is as tall as Streamlit's scrolling main block: grow the viewport so the screenshot
// holds all of it.
async function fullScreenshot(page, name) {
  const height = await page.evaluate(() => {
    const main = document.querySelector('[data-testid="stMain"]');
    return Math.max(main ? main.scrollHeight : 0, document.body.scrollHeight);
  });
  await page.setViewportSize({ width: 1440, height: Math.min(Math.max(height + 40, 900), 6000) });
  await page.waitForTimeout(800); // let deck.gl redraw at the new size
  const path = join(outdir, name);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot ${path}`);
}

async function mapHasDrawn(page) {
  const canvas = page.locator('[data-testid="stDeckGlJsonChart"] canvas').first();
  await canvas.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  const box = await canvas.boundingBox();
  if (!box || box.width < 200 || box.height < 200) fail(`deck.gl canvas is too small: ${JSON.stringify(box)}`);
  // A blank canvas compresses to almost nothing; districts and points do not.
  const png = await canvas.screenshot();
  if (png.length < 15_000) fail(`deck.gl canvas looks empty (${png.length} bytes as PNG)`);
}

// st.dataframe draws its cells on a canvas and mirrors them in an accessible grid: the table must be
// visible and the text in one of its cells.
async function expectInTable(page, text, what) {
  const table = page.locator('[data-testid="stDataFrame"]').first();
  try {
    await table.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
    await table.getByText(text, { exact: true }).first().waitFor({ state: 'attached', timeout: TIMEOUT_MS });
  } catch {
    fail(`${what} "${text}" is not in the incident table`);
  }
}

async function expectText(page, text, what) {
  try {
    await page.getByText(text, { exact: false }).first().waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  } catch {
    fail(`${what} "${text}" is not visible`);
  }
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
let code = 0;
let page;
try {
  page = await browser.newPage({ viewport: { width: 1440, height: 1000 }, locale: 'zh-CN' });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('request', (req) => {
    const target = req.url();
    if (/^https?:/.test(target) && new URL(target).origin !== origin) problems.push(`request to another host: ${target}`);
  });

  await page.goto(url, { waitUntil: 'domcontentloaded', timeout: TIMEOUT_MS });
  await page.waitForSelector('[data-testid="stMetric"]', { timeout: TIMEOUT_MS });
  await waitIdle(page);

  await expectInTable(page, expectedTitle, 'incident title');
  await expectText(page, '演示模式', 'demo-mode badge');
  await mapHasDrawn(page);
  if (problems.length) fail(problems.join('\n'));
  await fullScreenshot(page, 'overview-zh-CN.png');
  console.log('ready');

  if (lateText) {
    // The test writes a new incident now; the live fragment must show it without a reload.
    await expectInTable(page, lateText, 'incident written after the page loaded');
    console.log('live refresh ok');
  }

  await page.setViewportSize({ width: 1440, height: 1000 });
  await page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first().click();
  await page.getByRole('option', { name: 'English' }).click();
  await expectText(page, 'Operations overview', 'English page title');
  await waitIdle(page);
  await expectText(page, 'DEMO MODE', 'English demo-mode badge');
  await expectInTable(page, expectedTitle, 'incident title on the English page');
  await mapHasDrawn(page);
  await fullScreenshot(page, 'overview-en.png');
  if (problems.length) fail(problems.join('\n'));
  console.log('browser checks passed');
} catch (err) {
  console.error(`FAILED: ${err.message}`);
  code = 1;
  if (page) await page.screenshot({ path: join(outdir, 'failure.png'), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
process.exit(code);
