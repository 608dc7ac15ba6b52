// Drives the Herald console in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core, which cannot download a browser here): open the overview, find the dead
// letter, re-drive it, see it delivered. Screenshots go to the artifacts folder.
//
//   node console.test.mjs http://127.0.0.1:PORT/ ../../target/browser-artifacts
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const base = process.argv[2];
const artifacts = process.argv[3] ?? 'artifacts';
if (!base) {
  console.error('usage: node console.test.mjs URL [ARTIFACTS_DIR]');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const problems = [];
// A payload's <script> must never run, and the page must load without CSP or script errors.
page.on('dialog', async (dialog) => {
  problems.push(`a dialog opened: ${dialog.message()}`);
  await dialog.dismiss();
});
page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
page.on('console', (message) => {
  if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
});

function check(condition, message) {
  if (!condition) throw new Error(message);
}
async function shot(name) {
  const path = join(artifacts, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`  screenshot ${path}`);
}

try {
  console.log('overview');
  await page.goto(base);
  const byHandler = page.locator('#dead-letters-by-handler');
  await byHandler.waitFor();
  check((await byHandler.innerText()).includes('send_invoice'), 'the overview lists the dead letter of send_invoice');
  check(await page.locator('#ledger').isVisible(), 'the overview shows the ledger');
  await shot('overview');

  console.log('dead letters');
  await byHandler.getByRole('link', { name: 'see them' }).first().click();
  await page.waitForURL(/\/dead-letters\?/);
  const row = page.locator('#dead-letters tbody tr', { hasText: 'billing.invoice_requested' });
  check((await row.count()) === 1, 'one dead letter of billing.invoice_requested is listed');
  await shot('dead-letters');

  console.log('inspect');
  await row.locator('a').first().click();
  await page.waitForURL(/\/dead-letters\/\d+$/);
  const payload = await page.locator('#payload').innerText();
  check(payload.includes("<script>alert('note')</script>"), `the payload is shown as text: ${payload}`);
  const error = await page.locator('#last-error').innerText();
  check(error.includes('503 Service Unavailable <html><script>'), `the error is shown as text: ${error}`);
  await shot('dead-letter');

  console.log('re-drive');
  await page.getByRole('button', { name: 'Re-drive' }).click();
  await page.waitForURL(/\/feed\?row=\d+/);
  const rowId = new URL(page.url()).searchParams.get('row');
  check(await page.getByRole('status').isVisible(), 'a notice says the dead letter is back in the outbox');
  let status = '';
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    status = (await page.locator(`#events tr[data-row="${rowId}"] td.status`).innerText()).trim();
    if (status === 'processed') break;
    await page.waitForTimeout(300);
    await page.reload();
  }
  check(status === 'processed', `row ${rowId} was delivered (status: ${status})`);
  await shot('delivered');

  console.log('overview after');
  await page.goto(base);
  await page.locator('#no-dead-letters').waitFor();
  const ledger = await page.locator('#ledger tr', { hasText: 'send_invoice' }).innerText();
  // accepted, succeeded, failed attempts, retried, dead-lettered: the re-drive succeeded.
  const cells = ledger.split('\t').map((c) => c.trim());
  check(cells[2] === '1', `the ledger counts one success for send_invoice: ${ledger}`);
  await shot('overview-after');

  check(problems.length === 0, problems.join('\n'));
  console.log('browser test passed');
} catch (error) {
  await shot('failure').catch(() => {});
  console.error(`browser test FAILED: ${error.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
