// End-to-end scenarios of the web console in Debian's Chromium, driven by
// playwright-core (tests/peers, pinned by its lockfile). Run by
// tests/system/test_console.py, which starts the agent and the kernel
// side; each scenario is one run:  node console.mjs SCENARIO
// Configuration comes as JSON in $CONSOLE_TEST. A failed check throws,
// and the process exits 1 with the reason.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'peers', 'package.json'));
const { chromium } = require('playwright-core');

const cfg = JSON.parse(process.env.CONSOLE_TEST);
const sleep = ms => new Promise(r => setTimeout(r, ms));

async function api(method, p, body, token = cfg.admin) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(cfg.url + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: resp.status, body: resp.status === 204 ? null : await resp.json() };
}

// What every page opened recorded: printed when a scenario fails.
const opened = [];

// A browser page that records what went wrong on it.
async function open(width = 1280) {
  const browser = await chromium.launch({ executablePath: cfg.chromium,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  const page = await browser.newPage({ viewport: { width, height: 900 } });
  const problems = { console: [], failed: [], dialogs: [] };
  page.on('console', m => m.type() === 'error' && problems.console.push(m.text()));
  page.on('pageerror', e => problems.console.push(`page error: ${e.message}`));
  page.on('requestfailed', r => {
    // A stream the page closes on purpose is aborted, not failed.
    if (!(r.failure()?.errorText || '').includes('ERR_ABORTED')) problems.failed.push(`${r.url()}: ${r.failure()?.errorText}`);
  });
  page.on('response', r => r.status() >= 400 && problems.failed.push(`${r.url()}: ${r.status()}`));
  page.on('dialog', d => { problems.dialogs.push(d.message()); d.dismiss(); });
  opened.push(problems);
  await page.goto(cfg.url + '/');
  // Chromium drops the loads in flight when an interface of the host
  // changes (ERR_NETWORK_CHANGED), as when another test's namespace is
  // torn down late: that is no fault of the console, so load it again.
  const changed = t => t.includes('ERR_NETWORK_CHANGED');
  if (problems.failed.some(changed)) {
    problems.failed = problems.failed.filter(t => !changed(t));
    problems.console = problems.console.filter(t => !changed(t));
    await page.reload();
  }
  return { browser, page, problems };
}

async function signIn(page, token) {
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

async function go(page, view) {
  await page.evaluate(v => { location.hash = `#/${v}`; }, view);
  await page.locator('main h1').first().waitFor();
}

function clean(problems, what) {
  assert.deepEqual(problems.console, [], `console errors on ${what}`);
  assert.deepEqual(problems.failed, [], `failed requests on ${what}`);
  assert.deepEqual(problems.dialogs, [], `dialogs on ${what}`);
}

// Create a probe from the form: name, source option text, per program the
// hook kind and its fields.
async function createProbe(page, name, source, programs = {}, outputs = {}) {
  await go(page, 'probes');
  const form = page.locator('form.creator');
  await form.getByLabel('Name').fill(name);
  await form.getByLabel('Source').selectOption({ label: source });
  for (const [program, { kind, fields = {}, skip }] of Object.entries(programs)) {
    const row = form.locator(`.program[data-program="${program}"]`);
    if (skip) { await row.getByRole('checkbox').uncheck(); continue; }
    await row.getByLabel(`Hook for ${program}`).selectOption(kind);
    for (const [label, value] of Object.entries(fields)) await row.getByLabel(label).fill(value);
  }
  for (const [map, kind] of Object.entries(outputs))
    await form.getByLabel(new RegExp(`^Map ${map} `)).selectOption(kind);
  await form.getByRole('button', { name: 'Create probe' }).click();
  const notice = page.locator('#notice .notice');
  await notice.waitFor({ timeout: 15000 });
  assert.match(await notice.innerText(), new RegExp(`Probe ${name} stored`));
}

const scenarios = {
  // A bad token is refused with the agent's message; a good one shows the
  // overview with the principal and role.
  async signin() {
    const { browser, page } = await open();
    await signIn(page, 'not-a-token');
    await page.locator('.notice.error').waitFor();
    assert.match(await page.locator('.notice.error').innerText(), /token/i);
    assert.equal(await page.getByLabel('Token').isVisible(), true);
    await signIn(page, cfg.admin);
    await page.locator('#ov-agent').waitFor();
    assert.match(await page.locator('#who').innerText(), /admin\s*·\s*admin/);
    assert.equal(await page.locator('.notice.error').count(), 0, 'no error after signing in');
    assert.match(await page.locator('.facts').first().innerText(), new RegExp(cfg.version));
    // The token is in sessionStorage only: not in the URL, not in localStorage.
    assert.equal(page.url().includes(cfg.admin), false);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('graind.token')), cfg.admin);
    await browser.close();
  },

  // Upload by the file chooser: the object's page lists its programs.
  async upload() {
    const { browser, page } = await open();
    await signIn(page, cfg.admin);
    await go(page, 'objects');
    await page.getByLabel('Upload an eBPF object (.o)').setInputFiles(cfg.upload);
    await page.locator('main h1', { hasText: 'accept' }).waitFor({ timeout: 15000 });
    const programs = await page.locator('table').first().innerText();
    assert.match(programs, /count_packets/);
    const listed = await api('GET', '/v1/objects');
    assert.ok(listed.body.objects.some(o => o.name === 'accept' && !o.builtin), 'the agent has the upload');
    await browser.close();
  },

  // Verify an object the verifier rejects: the failing source line and its
  // text are highlighted, the log folded.
  async verify() {
    const { browser, page } = await open();
    await signIn(page, cfg.admin);
    await go(page, `objects/${cfg.rejectSha}`);
    await page.getByRole('button', { name: 'Verify' }).click();
    const line = page.locator('.verdict.bad .source');
    await line.waitFor({ timeout: 20000 });
    assert.match(await line.locator('.where').innerText(), /reject_oob\.bpf\.c:\d+/);
    assert.ok((await line.locator('mark.source-line').innerText()).trim().length > 0);
    assert.equal(await page.locator('.verdict.bad details').first().getAttribute('open'), null, 'log folded');
    await page.locator('.verdict.bad details summary').first().click();
    assert.ok(await page.locator('.verdict.bad mark.failing').count() >= 1, 'failing instruction marked');
    await browser.close();
  },

  // An exec probe made with the form; /bin/true run now appears in Live
  // within 2 s.
  async live() {
    const { browser, page } = await open();
    await signIn(page, cfg.admin);
    await createProbe(page, 'ui-exec', 'built-in: exec');
    await go(page, 'live');
    await page.locator('.state', { hasText: 'live' }).waitFor({ timeout: 10000 });
    const started = Date.now();
    execFileSync(cfg.marker);
    await page.locator('ol.events li', { hasText: path.basename(cfg.marker) }).first().waitFor({ timeout: 2000 });
    console.log(`event shown after ${Date.now() - started} ms`);
    await browser.close();
  },

  // A netstat probe on the test's veth: traffic sent now makes the chart's
  // last point grow.
  async chart() {
    const { browser, page } = await open();
    await signIn(page, cfg.admin);
    await createProbe(page, 'ui-netstat', 'built-in: netstat',
      { netstat_xdp: { kind: 'xdp', fields: { Interface: cfg.ifname } },
        netstat_tc_ingress: { skip: true }, netstat_tc_egress: { skip: true } }, { traffic: 'metric' });
    const probe = await api('GET', '/v1/probes/ui-netstat');
    assert.equal(probe.status, 200);
    assert.deepEqual(probe.body.spec.outputs, [{ map: 'traffic', metric: {} }]);
    assert.deepEqual(probe.body.spec.programs.map(p => p.program), ['netstat_xdp']);
    await go(page, 'charts');
    const sel = '[data-chart="ui-netstat/traffic"]';
    const read = () => page.evaluate(s => {
      const card = document.querySelector(s);
      return { points: Number(card?.dataset.points || 0), last: Number(card?.dataset.last || 0) };
    }, sel);
    // Before any traffic the chart may be empty or flat; while datagrams flow
    // its last point is a rate above zero, and it gains points.
    const sender = 'import socket, sys, time\n' +
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n' +
      'end = time.time() + 30\n' +
      'while time.time() < end:\n    s.sendto(b"x" * 100, (sys.argv[1], 9)); time.sleep(0.005)\n';
    const ping = spawn('ip', ['netns', 'exec', cfg.netns, '/usr/bin/python3', '-c', sender, cfg.hostIp],
      { stdio: 'ignore' });
    try {
      let now = await read();
      for (let i = 0; i < 60 && !(now.points >= 2 && now.last > 0); i++) {
        await sleep(250);
        now = await read();
      }
      assert.ok(now.points >= 2, `the chart has ${now.points} points`);
      assert.ok(now.last > 0, `the last point is ${now.last}/s while traffic flows`);
      const before = now.points;
      await page.waitForFunction(([s, n]) => Number(document.querySelector(s)?.dataset.points || 0) > n,
        [sel, before], { timeout: 10000 });
    } finally {
      ping.kill();
    }
    // The map behind the chart, dumped on the probe's page: decoded keys
    // and values.
    await go(page, 'probes/ui-netstat');
    await page.getByLabel('Map').fill('traffic');
    await page.getByRole('button', { name: 'Dump' }).click();
    const dump = page.locator('.dump table');
    await dump.waitFor();
    const text = await dump.innerText();
    assert.match(text, /ifindex=/);
    assert.match(text, /packets=[1-9]/);
    await browser.close();
  },

  // Detach and delete from the list; the caller checks the kernel.
  async remove() {
    const { browser, page } = await open();
    await signIn(page, cfg.admin);
    await go(page, 'probes');
    for (const name of ['ui-exec', 'ui-netstat']) {
      await page.getByRole('button', { name: `Detach ${name}` }).click();
      await page.locator('.notice.ok', { hasText: `${name}: detached` }).waitFor();
      const p = await api('GET', `/v1/probes/${name}`);
      assert.ok(p.body.programs.every(s => s.state === 'PROGRAM_DETACHED'), JSON.stringify(p.body.programs));
      await page.getByRole('button', { name: `Delete ${name}` }).click();
      await page.locator('dialog.confirm').getByRole('button', { name: 'Delete' }).click();
      await page.locator('.notice.ok', { hasText: `Deleted ${name}` }).waitFor();
      assert.equal((await api('GET', `/v1/probes/${name}`)).status, 404);
    }
    await browser.close();
  },

  // A reader: no write control is enabled anywhere; one forced open gets
  // the agent's 403 message in the page.
  async reader() {
    const { browser, page } = await open();
    await signIn(page, cfg.reader);
    await page.locator('#ov-agent').waitFor();
    assert.match(await page.locator('#who').innerText(), /reader/);
    const writes = /^(Attach|Detach|Delete|Verify|Create probe|Save sink)$/;
    for (const view of ['objects', 'probes', 'sinks', `objects/${cfg.rejectSha}`, 'probes/ui-reader']) {
      await go(page, view);
      await sleep(500);
      for (const b of await page.locator('main button').all())
        if (writes.test((await b.innerText()).trim()))
          assert.equal(await b.isDisabled(), true, `${view}: "${await b.innerText()}" is enabled for a reader`);
      for (const input of await page.locator('main input[type=file]').all())
        assert.equal(await input.isDisabled(), true, `${view}: the upload is enabled for a reader`);
    }
    await go(page, 'probes');
    const del = page.getByRole('button', { name: 'Delete ui-reader' });
    await del.evaluate(b => { b.disabled = false; });
    await del.click();
    await page.locator('dialog.confirm').getByRole('button', { name: 'Delete' }).click();
    const notice = page.locator('.notice.error');
    await notice.waitFor();
    assert.match(await notice.innerText(), /operator/);
    assert.equal((await api('GET', '/v1/probes/ui-reader')).status, 200, 'the probe is still there');
    await browser.close();
  },

  // What comes from the agent is text: a signer's comment and an exec
  // event of a program named like markup run no script.
  async escaping() {
    assert.equal((await api('PUT', '/v1/probes/ui-markup', { builtin: 'exec' })).status, 201);
    const { browser, page, problems } = await open();
    await signIn(page, cfg.admin);
    await go(page, 'objects');
    await page.locator('main td', { hasText: cfg.xssName }).first().waitFor();
    assert.equal(await page.locator('main img').count(), 0, 'no element made of the name');
    await go(page, 'live');
    await page.locator('.state', { hasText: 'live' }).waitFor({ timeout: 10000 });
    execFileSync(cfg.xssProgram);
    await page.locator('ol.events li', { hasText: path.basename(cfg.xssProgram) }).first().waitFor({ timeout: 5000 });
    assert.equal(await page.locator('main img').count(), 0);
    await sleep(300);
    clean(problems, 'the escaping views');
    await browser.close();
    assert.equal((await api('DELETE', '/v1/probes/ui-markup')).status, 204);
  },

  // Every view at a phone's and a desktop's width: no console error, no
  // failed request, no horizontal scrolling, a screenshot of each.
  async views() {
    mkdirSync(cfg.shots, { recursive: true });
    for (const width of [375, 1280]) {
      const { browser, page, problems } = await open(width);
      await page.screenshot({ path: path.join(cfg.shots, `signin-${width}.png`), fullPage: true });
      await signIn(page, cfg.admin);
      await page.locator('#ov-agent').waitFor();
      for (const view of ['overview', 'objects', `objects/${cfg.rejectSha}`, 'probes', 'probes/ui-reader',
        'live', 'charts', 'sinks', 'audit']) {
        await go(page, view);
        await sleep(700);
        if (view === 'probes') {
          // The form as it is for every source: sections can be long words.
          const source = page.locator('form.creator').getByLabel('Source');
          for (const option of await source.locator('option').all()) {
            await source.selectOption(await option.getAttribute('value'));
            const over = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
            assert.ok(over <= 0, `the form for ${await option.innerText()} at ${width} px scrolls sideways by ${over} px`);
          }
        }
        const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        const culprits = wide <= 0 ? [] : await page.evaluate(() => [...document.querySelectorAll('main *')]
          .filter(el => el.getBoundingClientRect().right > window.innerWidth + 1)
          .slice(-5).map(el => `${el.tagName}.${el.className} "${(el.textContent || '').slice(0, 60)}"`));
        assert.ok(wide <= 0, `${view} at ${width} px scrolls sideways by ${wide} px: ${culprits.join('; ')}`);
        await page.screenshot({ path: path.join(cfg.shots, `${view.replace(/\//g, '-')}-${width}.png`), fullPage: true });
      }
      // Keyboard: Tab from the top reaches the navigation with a visible focus.
      await page.keyboard.press('Tab');
      await page.keyboard.press('Tab');
      const focused = await page.evaluate(() => document.activeElement?.textContent);
      assert.ok(focused && focused.length > 0, 'Tab moves the focus onto a control');
      clean(problems, `the views at ${width} px`);
      await browser.close();
    }
  },
};

const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`no such scenario ${name}: ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
try {
  await scenarios[name]();
} catch (e) {
  console.error(e.stack || String(e));
  for (const p of opened) console.error('the page recorded:', JSON.stringify(p, null, 1));
  process.exit(1);
}
