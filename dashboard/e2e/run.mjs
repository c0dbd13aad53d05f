#!/usr/bin/env node
// End-to-end test of the dashboard against the real services.
//
// Starts the mock provider, the admin API (which serves the built dashboard) and
// the gateway on free loopback ports, drives headless Chromium through the
// dashboard, sends traffic through the gateway, and stops everything it started.
//
// Environment:
//   ADMIN_BIN, GATEWAY_BIN, MOCK_BIN  paths to the built binaries
//   DATABASE_URL                      a fresh, empty PostgreSQL database
//   DASHBOARD_DIR                     built dashboard (default: ../dist)
//   CHROMIUM_PATH                     browser binary (default: /usr/bin/chromium)
//   PERPETUO_PYTHON                   Python with aiosmtpd, for the SMTP server the admin
//                                     API sends invitations to (default: python3)
//   E2E_HEADFUL=1                     show the browser (for debugging)

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SCREENSHOTS = path.join(HERE, 'screenshots');
const HOST = '127.0.0.1';
const STARTUP_TIMEOUT_MS = 60_000;
const LOGS_TIMEOUT_MS = 45_000;
const USAGE_TIMEOUT_MS = 45_000;
const REVOKE_TIMEOUT_MS = 3_000;
const LIMIT_TIMEOUT_MS = 3_000;
const MODEL = 'gpt-4o-mini';

const children = [];
let browser = null;
let passed = 0;
const total = { steps: 0 };

// ---------------------------------------------------------------- helpers

function fail(message) {
  throw new Error(message);
}

function requireEnv(name) {
  const value = process.env[name];
  if (!value) fail(`${name} is not set (see the header of e2e/run.mjs)`);
  return value;
}

function requireExecutable(name) {
  const file = requireEnv(name);
  try {
    accessSync(file, constants.X_OK);
  } catch {
    fail(`${name}=${file} is not an executable file`);
  }
  return file;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, HOST, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Starts a service, keeping the tail of its output for failure reports. */
function startService(name, bin, args, env) {
  const child = spawn(bin, args, {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const service = { name, child, output: [], exited: null };
  const keep = (chunk) => {
    for (const line of chunk.toString().split('\n')) {
      if (!line) continue;
      service.output.push(line);
      if (service.output.length > 200) service.output.shift();
    }
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.on('exit', (code, signal) => {
    service.exited = { code, signal };
  });
  child.on('error', (err) => {
    service.exited = { code: -1, signal: null };
    service.output.push(`spawn failed: ${err.message}`);
  });
  children.push(service);
  return service;
}

function assertRunning(service) {
  if (service.exited) {
    fail(`${service.name} exited early (code ${service.exited.code}, signal ${service.exited.signal})`);
  }
}

async function waitFor(description, check, timeoutMs, intervalMs = 200) {
  const deadline = Date.now() + timeoutMs;
  let lastError = null;
  while (Date.now() < deadline) {
    try {
      const result = await check();
      if (result) return result;
    } catch (err) {
      lastError = err;
    }
    await sleep(intervalMs);
  }
  fail(`timed out after ${timeoutMs} ms waiting for ${description}${lastError ? ` (last error: ${lastError.message})` : ''}`);
}

function tcpConnects(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.setTimeout(1000, () => {
      socket.destroy();
      resolve(false);
    });
  });
}

/**
 * A real SMTP server (aiosmtpd, the admin API tests' sink) on a free loopback port; it
 * keeps every message it receives.
 */
async function startSmtpSink() {
  const python = process.env.PERPETUO_PYTHON ?? 'python3';
  const script = path.join(HERE, '..', '..', 'admin-api', 'tests', 'api', 'smtp_sink.py');
  const child = spawn(python, [script], { stdio: ['pipe', 'pipe', 'pipe'] });
  const service = { name: 'SMTP server', child, output: [], exited: null };
  children.push(service);
  child.on('exit', (code, signal) => {
    service.exited = { code, signal };
  });
  child.on('error', (err) => {
    service.exited = { code: -1, signal: null };
    service.output.push(`spawn failed: ${err.message}`);
  });
  child.stderr.on('data', (chunk) => service.output.push(chunk.toString()));
  const sink = { port: null, messages: [] };
  let pending = '';
  child.stdout.on('data', (chunk) => {
    pending += chunk.toString();
    let at;
    while ((at = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, at);
      pending = pending.slice(at + 1);
      if (line.startsWith('PORT ')) sink.port = Number(line.slice(5));
      else if (line.trim()) sink.messages.push(JSON.parse(line));
    }
  });
  await waitForService(service, `the SMTP server (aiosmtpd in ${python})`, async () => sink.port !== null);
  return sink;
}

/** The body of a received message with quoted-printable soft breaks and escapes undone. */
function decodeMail(raw) {
  return raw
    .replace(/=\r?\n/g, '')
    .replace(/=([0-9A-F]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
}

async function httpOk(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  return res.status === 200;
}

/** Waits until `check` passes; fails at once if the service exits meanwhile. */
async function waitForService(service, description, check) {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    assertRunning(service);
    if (await check().catch(() => false)) return;
    await sleep(200);
  }
  assertRunning(service);
  fail(`timed out after ${STARTUP_TIMEOUT_MS} ms waiting for ${description}`);
}

/** Stops every started process by its PID: SIGTERM, then SIGKILL after a grace period. */
async function stopAll() {
  if (browser) {
    await browser.close().catch(() => undefined);
    browser = null;
  }
  const running = children.filter((s) => !s.exited && s.child.pid);
  for (const s of running) {
    try {
      process.kill(s.child.pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && running.some((s) => !s.exited)) await sleep(100);
  for (const s of running) {
    if (s.exited) continue;
    try {
      process.kill(s.child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

function killAllNow() {
  for (const s of children) {
    if (!s.exited && s.child.pid) {
      try {
        process.kill(s.child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

process.on('exit', killAllNow);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    console.error(`\nreceived ${signal}, stopping services`);
    stopAll().finally(() => process.exit(130));
  });
}

async function step(name, fn) {
  total.steps += 1;
  const started = Date.now();
  process.stdout.write(`• ${name} … `);
  try {
    const result = await fn();
    passed += 1;
    console.log(`ok (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    return result;
  } catch (err) {
    console.log('FAILED');
    err.step = name;
    throw err;
  }
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true, animations: 'disabled' });
}

async function chat(gatewayUrl, key, { stream = false } = {}) {
  const res = await fetch(`${gatewayUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], ...(stream ? { stream: true } : {}) }),
    signal: AbortSignal.timeout(20_000),
  });
  const text = await res.text();
  return { status: res.status, text, headers: res.headers };
}

// ---------------------------------------------------------------- the test

function gatewayDataDir() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'perpetuo-e2e-gateway-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function main() {
  const adminBin = requireExecutable('ADMIN_BIN');
  const gatewayBin = requireExecutable('GATEWAY_BIN');
  const mockBin = requireExecutable('MOCK_BIN');
  const databaseUrl = requireEnv('DATABASE_URL');
  const dashboardDir = path.resolve(process.env.DASHBOARD_DIR ?? path.join(HERE, '..', 'dist'));
  if (!existsSync(path.join(dashboardDir, 'index.html'))) {
    fail(`no index.html in ${dashboardDir}: run "npm run build" first or set DASHBOARD_DIR`);
  }
  const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
  if (!existsSync(chromiumPath)) fail(`Chromium not found at ${chromiumPath} (apt-get install -y chromium)`);
  mkdirSync(SCREENSHOTS, { recursive: true });

  const masterKey = randomBytes(32).toString('base64');
  const jwtSecret = randomBytes(32).toString('hex');
  const [mockPort, adminPort, gatewayPort, metricsPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const mockBase = `http://${HOST}:${mockPort}/v1`;
  const adminUrl = `http://${HOST}:${adminPort}`;
  const gatewayUrl = `http://${HOST}:${gatewayPort}`;

  await step('start the mock provider', async () => {
    const mock = startService('mock provider', mockBin, ['--addr', `${HOST}:${mockPort}`], {});
    await waitForService(mock, `mock provider on port ${mockPort}`, () => tcpConnects(mockPort));
  });

  const smtp = await step('start an SMTP server', startSmtpSink);

  await step('start the admin API', async () => {
    const admin = startService('admin API', adminBin, [], {
      SMTP_URL: `smtp://${HOST}:${smtp.port}`,
      MAIL_FROM: 'Perpetuo <noreply@perpetuo.test>',
      ADMIN_PUBLIC_URL: adminUrl,
      // Verification has its own tests; this run signs up and adds a provider at once.
      EMAIL_VERIFICATION: 'off',
      DATABASE_URL: databaseUrl,
      JWT_SECRET: jwtSecret,
      PERPETUO_MASTER_KEY: masterKey,
      ADMIN_ADDR: `${HOST}:${adminPort}`,
      DASHBOARD_DIR: dashboardDir,
      ALLOWED_PRIVATE_UPSTREAMS: '127.0.0.0/8',
      GATEWAY_PUBLIC_URL: gatewayUrl,
    });
    await waitForService(admin, `${adminUrl}/healthz`, () => httpOk(`${adminUrl}/healthz`));
  });

  await step('start the gateway', async () => {
    const gateway = startService('gateway', gatewayBin, [], {
      DATABASE_URL: databaseUrl,
      PERPETUO_MASTER_KEY: masterKey,
      GATEWAY_ADDR: `${HOST}:${gatewayPort}`,
      METRICS_ADDR: `${HOST}:${metricsPort}`,
      ALLOWED_PRIVATE_UPSTREAMS: '127.0.0.0/8',
      // The gateway's log spool: a private directory, removed when the process exits.
      DATA_DIR: gatewayDataDir(),
    });
    await waitForService(gateway, `${gatewayUrl}/healthz`, () => httpOk(`${gatewayUrl}/healthz`));
  });

  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: process.env.E2E_HEADFUL !== '1',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('console', (msg) => {
    if (msg.type() === 'error') pageErrors.push(msg.text());
  });
  main.page = page;
  main.pageErrors = pageErrors;

  const nav = (name) => page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true });
  const email = `e2e-${Date.now()}@example.com`;
  const providerName = 'Mock upstream';
  const keyName = 'e2e key';

  await step('sign up and see the quickstart', async () => {
    await page.goto(`${adminUrl}/#/signup`);
    await page.getByRole('heading', { name: 'Create your account' }).waitFor();
    await shot(page, '00-signup');
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill('correct-horse-battery');
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByRole('heading', { name: 'Quickstart' }).waitFor();
    const signupKey = await page.getByLabel('Your API key').inputValue();
    if (signupKey.length < 16) fail(`signup key looks wrong: "${signupKey}"`);
    await page.getByText(`${gatewayUrl}/v1`, { exact: true }).waitFor();
    const curl = await page.getByLabel('curl snippet').textContent();
    if (!curl.includes(`Bearer ${signupKey}`)) fail('the curl snippet does not carry the signup key');
    await shot(page, '01-home-quickstart');
  });

  await step('add an OpenAI-compatible provider pointing at the mock', async () => {
    await nav('Providers').click();
    await page.getByRole('heading', { name: 'Providers', level: 1 }).waitFor();
    await page.getByText('No providers yet').waitFor();
    await page.getByRole('link', { name: 'Add provider' }).first().click();
    await page.getByRole('heading', { name: 'Add provider', level: 1 }).waitFor();
    await page.getByLabel('Kind').selectOption('openai_compatible');
    await page.getByLabel('Name').fill(providerName);
    await page.getByLabel('Base URL', { exact: true }).fill(mockBase);
    await page.getByLabel('API key').fill('sk-mock-e2e-1234');
    await shot(page, '03-provider-form');
    await page.getByRole('button', { name: 'Add provider' }).click();
    await page.getByRole('heading', { name: 'Providers', level: 1 }).waitFor();
    await page.getByText(providerName, { exact: true }).waitFor();
    await page.getByText('…1234', { exact: true }).waitFor();
    const enabled = page.getByRole('switch', { name: `Enable ${providerName}` });
    if (!(await enabled.isChecked())) fail('the new provider is not enabled');
    await shot(page, '02-providers');
  });

  const apiKey = await step('create an API key and read it from the page', async () => {
    await nav('API keys').click();
    await page.getByRole('heading', { name: 'API keys', level: 1 }).waitFor();
    await page.getByRole('button', { name: 'Create API key' }).click();
    const dialog = page.getByRole('dialog', { name: 'Create API key' });
    await dialog.getByLabel('Key name').fill(keyName);
    await dialog.getByRole('button', { name: 'Create key' }).click();
    const created = page.getByRole('dialog', { name: 'API key created' });
    const key = await created.getByLabel('New API key').inputValue();
    if (key.length < 16) fail(`created key looks wrong: "${key}"`);
    await created.getByText('It will not be shown again').waitFor();
    await shot(page, '04-api-keys-created');
    await created.getByRole('button', { name: 'Done' }).click();
    await page.getByRole('row', { name: new RegExp(keyName) }).getByText('Active').waitFor();
    return key;
  });

  await step('send 3 chat requests through the gateway (one streamed)', async () => {
    for (const stream of [false, true, false]) {
      const { status, text } = await chat(gatewayUrl, apiKey, { stream });
      if (status !== 200) fail(`gateway answered ${status}${stream ? ' (stream)' : ''}: ${text.slice(0, 300)}`);
      if (stream) {
        if (!text.includes('data:') || !text.includes('[DONE]')) fail(`streamed answer is not SSE: ${text.slice(0, 300)}`);
      } else {
        const body = JSON.parse(text);
        if (!body.choices?.length) fail(`answer has no choices: ${text.slice(0, 300)}`);
      }
    }
  });

  await step('see the 3 requests in Logs and open one', async () => {
    await nav('Logs').click();
    await page.getByRole('heading', { name: 'Logs', level: 1 }).waitFor();
    await page.getByLabel('Auto-refresh (5 s)').check();
    const rows = page.locator('table tbody tr');
    await waitFor(
      '3 rows in the logs table',
      async () => {
        if ((await rows.count()) >= 3) return true;
        await page.getByRole('button', { name: 'Refresh' }).click();
        return false;
      },
      LOGS_TIMEOUT_MS,
      1000,
    );
    const count = await rows.count();
    if (count !== 3) fail(`expected 3 log rows, found ${count}`);
    await rows.first().getByText(providerName).waitFor();
    await shot(page, '05-logs');
    await page.getByRole('button', { name: /^Details of request/ }).first().click();
    const detail = page.getByRole('dialog', { name: 'Request details' });
    await detail.getByRole('heading', { name: /Attempts \(1\)/ }).waitFor();
    await detail.getByText('Time to first byte').waitFor();
    await detail.getByText('Usage source').waitFor();
    await detail.getByRole('cell', { name: providerName }).waitFor();
    await shot(page, '06-log-detail');
    await detail.getByRole('button', { name: 'Close' }).click();
    await page.getByLabel('Auto-refresh (5 s)').uncheck();
  });

  await step('see non-zero numbers in Usage', async () => {
    await nav('Usage').click();
    await page.getByRole('heading', { name: 'Usage', level: 1 }).waitFor();
    const requests = page.getByRole('group', { name: 'Requests' });
    const tokens = page.getByRole('group', { name: 'Total tokens' });
    const number = async (locator) => {
      const text = (await locator.locator('.stat-value').textContent()) ?? '';
      return Number(text.replace(/[^0-9.]/g, '')) || 0;
    };
    await waitFor(
      'usage totals of 3 requests',
      async () => {
        await requests.waitFor();
        if ((await number(requests)) >= 3 && (await number(tokens)) > 0) return true;
        await page.getByRole('button', { name: 'Refresh' }).click();
        return false;
      },
      USAGE_TIMEOUT_MS,
      1500,
    );
    await page.getByRole('table', { name: 'Usage by provider and model' }).getByText(providerName).waitFor();
    await page.waitForTimeout(300); // let the charts finish their layout
    await shot(page, '07-usage');
  });

  await step('set an RPM of 2 on the key, see the third request refused and the refusal in Logs', async () => {
    await nav('API keys').click();
    await page.getByRole('heading', { name: 'API keys', level: 1 }).waitFor();
    await page.getByRole('button', { name: `Limits of ${keyName}` }).click();
    const dialog = page.getByRole('dialog', { name: 'Key limits' });
    await dialog.getByLabel('Requests per minute').fill('2');
    await dialog.getByRole('button', { name: 'Save limits' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await page.getByRole('row', { name: new RegExp(keyName) }).getByText('/ 2 req/min').waitFor();
    await shot(page, '08-api-key-limits');
    // Minute windows are calendar minutes: keep the three requests inside one.
    const second = new Date().getUTCSeconds();
    if (second >= 45) await sleep((61 - second) * 1000);
    // The limit reaches the gateway by NOTIFY; the first answer that carries it is request 1.
    let last = null;
    await waitFor(
      'the gateway to apply the RPM',
      async () => {
        last = await chat(gatewayUrl, apiKey);
        return last.status === 200 && last.headers.get('x-ratelimit-limit-requests') === '2';
      },
      LIMIT_TIMEOUT_MS,
      100,
    ).catch(() => fail(`the gateway did not apply the limit: ${last?.status} ${last?.headers.get('x-ratelimit-limit-requests')}`));
    if (last.headers.get('x-ratelimit-remaining-requests') !== '1') fail(`first request: remaining ${last.headers.get('x-ratelimit-remaining-requests')}`);
    const secondReq = await chat(gatewayUrl, apiKey);
    if (secondReq.status !== 200) fail(`second request answered ${secondReq.status}: ${secondReq.text.slice(0, 300)}`);
    const third = await chat(gatewayUrl, apiKey);
    if (third.status !== 429) fail(`third request answered ${third.status}, not 429`);
    const error = JSON.parse(third.text).error;
    if (error?.code !== 'rate_limit_exceeded') fail(`third request refused with ${third.text.slice(0, 300)}`);
    if (!third.headers.get('retry-after')) fail('the refusal has no Retry-After');

    await nav('Logs').click();
    await page.getByRole('heading', { name: 'Logs', level: 1 }).waitFor();
    const refused = page.locator('table tbody tr').filter({ has: page.getByText('429', { exact: true }) });
    await waitFor(
      'the refusal in the logs table',
      async () => {
        if ((await refused.count()) >= 1) return true;
        await page.getByRole('button', { name: 'Refresh' }).click();
        return false;
      },
      LOGS_TIMEOUT_MS,
      1000,
    );
    await shot(page, '08-logs-refusal');
  });

  await step('revoke the key in the UI and get 401 from the gateway', async () => {
    await nav('API keys').click();
    await page.getByRole('heading', { name: 'API keys', level: 1 }).waitFor();
    await page.getByRole('button', { name: `Revoke ${keyName}` }).click();
    const confirm = page.getByRole('dialog', { name: 'Revoke API key?' });
    await confirm.getByRole('button', { name: 'Revoke key' }).click();
    await page.getByRole('row', { name: new RegExp(keyName) }).getByText('Revoked').waitFor();
    await shot(page, '08-api-key-revoked');
    let last = null;
    await waitFor(
      'the gateway to refuse the revoked key',
      async () => {
        last = await chat(gatewayUrl, apiKey);
        return last.status === 401;
      },
      REVOKE_TIMEOUT_MS,
      150,
    ).catch(() => fail(`gateway still answers ${last?.status} to the revoked key after ${REVOKE_TIMEOUT_MS} ms`));
  });

  await step('a refused access token is refreshed without leaving the app', async () => {
    const session = () => page.evaluate(() => ({ refresh: sessionStorage.getItem('perpetuo.refresh') }));
    const before = await session();
    if (!before.refresh) fail('no refresh token kept with the session');
    await page.evaluate(() => sessionStorage.setItem('perpetuo.token', 'no.longer.valid'));
    await nav('Logs').click();
    await page.getByRole('heading', { name: 'Logs', level: 1 }).waitFor();
    await page.locator('table tbody tr').getByText(providerName).first().waitFor();
    const after = await session();
    if (!after.refresh || after.refresh === before.refresh) fail('the refresh token was not rotated');
    main.refreshToken = after.refresh;
  });

  const invitee = `viewer-${Date.now()}@example.com`;
  const inviteLink = await step('invite a second user as viewer through the real SMTP server', async () => {
    await nav('Members').click();
    await page.getByRole('heading', { name: 'Members', level: 1 }).waitFor();
    await page.getByLabel('Email', { exact: true }).fill(invitee);
    await page.getByLabel('Role', { exact: true }).selectOption('viewer');
    await page.getByRole('button', { name: 'Send invitation' }).click();
    await page.getByText(`Invitation sent to ${invitee}.`).waitFor();
    await page.getByRole('cell', { name: invitee, exact: true }).waitFor();
    await shot(page, '09a-members');
    const message = await waitFor(`an email to ${invitee}`, async () => smtp.messages.find((m) => m.to.includes(invitee)), 10_000);
    const body = decodeMail(message.data);
    const link = body.match(/http:\/\/[^\s"<]+#\/invite\?token=[A-Za-z0-9_-]+/)?.[0];
    if (!link) fail(`no invitation link in the email:\n${body.slice(0, 2000)}`);
    if (!link.startsWith(adminUrl)) fail(`the link does not point at the dashboard: ${link}`);
    return link;
  });

  await step('see the invitation in the Audit view', async () => {
    await nav('Audit').click();
    await page.getByRole('heading', { name: 'Audit log', level: 1 }).waitFor();
    const row = page.getByRole('row').filter({ hasText: 'invited a member' });
    await row.getByText(`email: ${invitee}`).waitFor();
    await row.getByRole('cell', { name: email, exact: true }).waitFor();
    await shot(page, '09b-audit');
  });

  await step('see the settings, log out and see the login page', async () => {
    await nav('Settings').click();
    await page.getByRole('heading', { name: 'Settings', level: 1 }).waitFor();
    await shot(page, '09-settings');
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByRole('heading', { name: 'Log in to Perpetuo' }).waitFor();
    await shot(page, '10-login');
    // Logging out ended the session on the server too.
    const res = await fetch(`${adminUrl}/auth/refresh`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refresh_token: main.refreshToken }),
    });
    if (res.status !== 401) fail(`the refresh token still works after logout (${res.status})`);
  });

  await step('the invitee follows the link, signs up and accepts', async () => {
    await page.goto(inviteLink);
    await page.getByRole('heading', { name: 'Join a workspace' }).waitFor();
    await page.getByRole('link', { name: 'Create an account' }).click();
    await page.getByRole('heading', { name: 'Create your account' }).waitFor();
    await page.getByLabel('Email').fill(invitee);
    await page.getByLabel('Password').fill('viewer-password-123');
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByRole('button', { name: 'Accept invitation' }).click();
    await page.getByRole('navigation', { name: 'Main' }).waitFor();
    await waitFor('the invited workspace to be selected', async () => {
      await nav('Members').click();
      return (await page.getByText('Your role: viewer.').count()) > 0;
    }, 10_000);
    await shot(page, '11-viewer-members');
  });

  await step('a viewer sees no provider form and cannot create keys', async () => {
    for (const hidden of ['Providers', 'API keys', 'Audit']) {
      if ((await nav(hidden).count()) > 0) fail(`a viewer sees the ${hidden} link`);
    }
    await page.goto(`${adminUrl}/#/providers/new`);
    await page.getByText('Not available to your role').waitFor();
    if ((await page.getByLabel('Base URL', { exact: true }).count()) > 0) fail('a viewer sees the provider form');
    await page.goto(`${adminUrl}/#/api-keys`);
    await page.getByText('Not available to your role').waitFor();
    if ((await page.getByRole('button', { name: /Create/ }).count()) > 0) fail('a viewer sees a create-key button');
    await shot(page, '12-viewer-no-keys');
    // The server refuses it too.
    const { token, workspace } = await page.evaluate(() => ({
      token: sessionStorage.getItem('perpetuo.token'),
      workspace: sessionStorage.getItem('perpetuo.workspace'),
    }));
    const res = await fetch(`${adminUrl}/workspaces/${workspace}/api-keys`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body: JSON.stringify({ name: 'not allowed' }),
    });
    if (res.status !== 403) fail(`a viewer creating a key got ${res.status}, not 403`);
  });

  if (pageErrors.length > 0) {
    console.log(`\nbrowser console errors seen during the run:\n  ${pageErrors.join('\n  ')}`);
  }
  // The admin API sends a strict Content-Security-Policy: nothing the dashboard does may
  // trip it.
  const cspViolations = pageErrors.filter((m) => m.includes('Content Security Policy'));
  if (cspViolations.length > 0) fail(`the dashboard violates its Content-Security-Policy:\n  ${cspViolations.join('\n  ')}`);
}

// ---------------------------------------------------------------- run

const started = Date.now();
let exitCode = 0;
try {
  await main();
  console.log(`\nscreenshots in ${path.relative(process.cwd(), SCREENSHOTS) || SCREENSHOTS}`);
} catch (err) {
  exitCode = 1;
  console.error(`\nE2E FAILURE${err.step ? ` in "${err.step}"` : ''}: ${err.message}`);
  if (main.page) {
    await main.page
      .screenshot({ path: path.join(SCREENSHOTS, 'failure.png'), fullPage: true })
      .then(() => console.error(`page at failure: ${path.join(SCREENSHOTS, 'failure.png')}`))
      .catch(() => undefined);
    console.error(`page URL at failure: ${main.page.url()}`);
  }
  if (main.pageErrors?.length) console.error(`browser console errors:\n  ${main.pageErrors.join('\n  ')}`);
  for (const s of children) {
    console.error(`\n--- last output of ${s.name}${s.exited ? ` (exited: code ${s.exited.code}, signal ${s.exited.signal})` : ''} ---`);
    console.error(s.output.slice(-40).join('\n') || '(none)');
  }
} finally {
  await stopAll();
}
console.log(`finished in ${((Date.now() - started) / 1000).toFixed(1)} s`);
console.log(`${passed} passed, ${exitCode === 0 ? 0 : 1} failed`);
process.exit(exitCode);
