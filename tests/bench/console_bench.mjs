// The console benchmark's browser side (bench_console.py runs it):
//   render   print {overview, overview_ref, live, live_ref}: ms from
//            navigation start until the view's content is in the page
//   follow   open Live on every probe, print "following", then after
//            cfg.seconds + 1 the events it received a second in that time
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'peers', 'package.json'));
const { chromium } = require('playwright-core');
const cfg = JSON.parse(process.env.CONSOLE_BENCH);

// The reference: the least a view can do, served on the agent's origin
// by the browser driver itself.
const REFERENCE = `<!doctype html><meta charset="utf-8"><title>ref</title><div id="out"></div><script>
const t = sessionStorage.getItem('graind.token');
const h = { Authorization: 'Bearer ' + t };
if (location.hash === '#live') {
  fetch('/v1/status', { headers: h }).then(r => r.json()).then(s =>
    fetch('/v1/samples:watch?after=' + s.lastSampleId, { headers: { ...h, Accept: 'text/event-stream' } }))
    .then(r => { document.getElementById('out').textContent = 'live'; document.getElementById('out').id = 'done'; });
} else {
  fetch('/v1/status', { headers: h }).then(r => r.json()).then(s => {
    document.getElementById('out').textContent = JSON.stringify(s); document.getElementById('out').id = 'done'; });
}
</script>`;

async function page(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.addInitScript(t => sessionStorage.setItem('graind.token', t), cfg.token);
  await context.route(`${cfg.url}/bench-reference`, r => r.fulfill({ contentType: 'text/html', body: REFERENCE }));
  return context.newPage();
}

async function timed(browser, url, selector) {
  const p = await page(browser);
  await p.goto(url);
  try {
    await p.waitForSelector(selector, { timeout: 30000 });
  } catch (e) {
    throw new Error(`${url}: ${selector} did not appear; the page says: ${(await p.locator('body').innerText()).slice(0, 400)}`);
  }
  const ms = await p.evaluate(() => performance.now());
  await p.close();
  return ms;
}

const browser = await chromium.launch({ executablePath: cfg.chromium,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
if (process.argv[2] === 'render') {
  const best = async (url, sel) => {
    const runs = [];
    for (let i = 0; i < 5; i++) runs.push(await timed(browser, url, sel));
    return Math.min(...runs);
  };
  const out = {
    overview: await best(`${cfg.url}/#/overview`, 'section[aria-labelledby=ov-agent] dd'),
    overview_ref: await best(`${cfg.url}/bench-reference#overview`, '#done'),
    live: await best(`${cfg.url}/#/live`, '.state:text("live")'),
    live_ref: await best(`${cfg.url}/bench-reference#live`, '#done'),
  };
  console.log(JSON.stringify(out));
  await browser.close();
} else {
  const p = await page(browser);
  await p.goto(`${cfg.url}/#/live`);
  await p.waitForSelector('.state:text("live")', { timeout: 30000 });
  const received = () => p.evaluate(() => Number((document.querySelector('.count')?.textContent || '0').split(' ')[0]));
  const first = await received();
  console.log('following');
  const t0 = Date.now();
  await new Promise(r => setTimeout(r, (cfg.seconds + 1) * 1000));
  console.log(((await received()) - first) / ((Date.now() - t0) / 1000));
  await browser.close();
}
