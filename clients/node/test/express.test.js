// The Express middleware with real Express on a loopback port, against the
// real coordinator (started by the harness), driven by fetch. The app counts
// its charges per key.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const express = require('express');
const { Coordinator } = require('..');
const { idempotency, scopedNamespace } = require('../express');
const { timestampMs } = require('../heartbeat');
const { sleep, startCoordinator, untilReady } = require('./harness');

let running, coordinator, server, base;
const charges = new Map();
let requests = 0;

// These tests' caller identity: an app's own authentication would say who called.
const caller = () => 'test-caller';

function app(coordinatorClient) {
  const routes = [
    { methods: ['POST'], path: '/payments', namespace: 'express.payments', identity: caller, leaseTtl: 2, ignoreFields: ['/sent_at'],
      retryable4xx: [429], maxRequestBytes: 4096, maxStoredResponseBytes: 8192 },
    { methods: ['POST'], path: '/waiting/payments', namespace: 'express.waiting', identity: caller, wait: 10 },
  ];
  const application = express();
  application.use(idempotency(coordinatorClient, routes));
  application.use(express.json());
  const pay = async (req, res) => {
    requests++;
    await sleep(Number(req.get('x-test-delay') || 0) * 1000);
    if (req.get('x-test-status')) {
      const status = Number(req.get('x-test-status'));
      return res.status(status).json({ error: `refused with ${status}` });
    }
    const key = req.get('idempotency-key');
    charges.set(key, (charges.get(key) || 0) + 1);
    const id = `ch_${crypto.randomUUID().slice(0, 12)}`;
    res.status(201).location(`/payments/${id}`).set('x-served-at', String(Date.now()))
      .json({ id, amount: req.body.amount, token: req.get('idempotency-fencing-token'), padding: 'x'.repeat(Number(req.get('x-test-response-bytes') || 0)) });
  };
  application.post('/payments', pay);
  application.post('/waiting/payments', pay);
  return application;
}

function listen(application) {
  return new Promise((resolve) => {
    const listening = application.listen(0, '127.0.0.1', () => resolve(listening));
  });
}

before(async () => {
  running = await startCoordinator();
  coordinator = new Coordinator(`127.0.0.1:${running.port}`, { owner: 'express-test' });
  await untilReady(coordinator);
  server = await listen(app(coordinator));
  base = `http://127.0.0.1:${server.address().port}`;
});

after(() => {
  server.close();
  coordinator.close();
  running.stop();
});

const pay = (key, body, { path = '/payments', headers = {} } = {}) =>
  fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key === null ? {} : { 'idempotency-key': `"${key}"` }), ...headers },
    body: JSON.stringify(body),
  });

// Issue 26: JSON.parse made two account ids (or prices) one number, so the
// second request got the first one's answer.
test('a JSON number a double cannot hold is 400 naming it and never runs', async () => {
  const key = crypto.randomUUID();
  const before = requests;
  for (const [body, pointer] of [
    ['{"account_id": 1234567890123456789}', '/account_id'],
    ['{"account_id": 1234567890123456788}', '/account_id'],
    ['{"amount": 0.10000000000000000001}', '/amount'],
    ['{"amount": 0.1, "sent_at": 1234567890123456789}', '/sent_at'],
  ]) {
    const refused = await fetch(`${base}/payments`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': `"${key}"` }, body,
    });
    assert.equal(refused.status, 400, body);
    assert.equal(refused.headers.get('content-type'), 'application/problem+json');
    const document = await refused.json();
    assert.equal(document.type, 'urn:idempotency-gateway:json-number-inexact');
    assert.equal(document.pointer, pointer);
    assert.match(document.detail, /send it as a string/);
  }
  assert.equal(requests, before);
  assert.equal((await pay(key, { account_id: '1234567890123456789', amount: 0.1 })).status, 201);
});

test('a double submit charges once and replays the created answer', async () => {
  const key = crypto.randomUUID();
  const first = await pay(key, { amount: 100, sent_at: '09:00' });
  const firstBody = await first.text();
  const second = await pay(key, { sent_at: '09:05', amount: 100 });
  assert.equal(first.status, 201);
  assert.equal(second.status, 201);
  assert.equal(first.headers.get('idempotent-replayed'), null);
  assert.equal(second.headers.get('idempotent-replayed'), 'true');
  assert.equal(await second.text(), firstBody);
  assert.equal(second.headers.get('location'), first.headers.get('location'));
  assert.equal(first.headers.get('cache-control'), 'no-store');
  assert.equal(second.headers.get('cache-control'), 'no-store');
  assert.ok(first.headers.get('x-served-at') && !second.headers.get('x-served-at'));
  assert.equal(charges.get(`"${key}"`), 1);
  assert.ok(Number(JSON.parse(firstBody).token) > 0, 'the handler got the fencing token');
});

test('a reused key is 422 naming the member and never runs', async () => {
  const key = crypto.randomUUID();
  await pay(key, { amount: 100, currency: 'EUR' });
  const before = requests;
  const reused = await pay(key, { amount: 200, currency: 'EUR' });
  assert.equal(reused.status, 422);
  assert.equal(reused.headers.get('content-type'), 'application/problem+json');
  const document = await reused.json();
  assert.equal(document.type, 'urn:idempotency-gateway:idempotency-key-reused');
  assert.deepEqual(document.differing_members, ['amount']);
  assert.equal(requests, before);
});

test('missing and malformed keys are 400 naming the header', async () => {
  const before = requests;
  for (const [headers, name] of [[{}, 'idempotency-key-missing'], [{ 'idempotency-key': 'bare-token' }, 'idempotency-key-malformed']]) {
    const answer = await fetch(`${base}/payments`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{}' });
    assert.equal(answer.status, 400);
    const document = await answer.json();
    assert.equal(document.type, `urn:idempotency-gateway:${name}`);
    assert.equal(document.header, 'Idempotency-Key');
  }
  assert.equal(requests, before);
});

test('a retry while the first runs is 409, or waits on a route that says so', async () => {
  for (const [path, expected] of [['/payments', 409], ['/waiting/payments', 201]]) {
    const key = crypto.randomUUID();
    const first = pay(key, { amount: 5 }, { path, headers: { 'x-test-delay': '1.5' } });
    await sleep(500);
    const retry = await pay(key, { amount: 5 }, { path });
    assert.equal(retry.status, expected);
    if (expected === 409) {
      assert.equal((await retry.json()).type, 'urn:idempotency-gateway:request-in-progress');
      assert.ok(Number(retry.headers.get('retry-after')) >= 1);
    } else {
      assert.equal(retry.headers.get('idempotent-replayed'), 'true');
    }
    assert.equal((await first).status, 201);
    assert.equal(charges.get(`"${key}"`), 1);
  }
});

test('concurrent retries charge once', async () => {
  const key = crypto.randomUUID();
  const answers = await Promise.all(Array.from({ length: 8 }, () => pay(key, { amount: 9 }, { headers: { 'x-test-delay': '0.5' } })));
  const executed = answers.filter((a) => a.status === 201 && !a.headers.get('idempotent-replayed'));
  assert.equal(executed.length, 1, answers.map((a) => a.status).join(','));
  assert.ok(answers.every((a) => a.status === 201 || a.status === 409));
  assert.equal(charges.get(`"${key}"`), 1);
});

test('a 500 or a retryable 429 releases the key and a final 4xx is replayed', async () => {
  for (const status of ['500', '429']) {
    const key = crypto.randomUUID();
    const failed = await pay(key, { amount: 3 }, { headers: { 'x-test-status': status } });
    assert.equal(String(failed.status), status);
    assert.equal(failed.headers.get('cache-control'), 'no-store');
    const retried = await pay(key, { amount: 3 });
    assert.equal(retried.status, 201);
    assert.equal(retried.headers.get('idempotent-replayed'), null);
    assert.equal(charges.get(`"${key}"`), 1);
  }
  const key = crypto.randomUUID();
  const declined = await pay(key, { amount: 3 }, { headers: { 'x-test-status': '402' } });
  const again = await pay(key, { amount: 3 });
  assert.deepEqual([declined.status, again.status, again.headers.get('idempotent-replayed')], [402, 402, 'true']);
});

test('oversized bodies are 413 and an answer too large to store still arrives', async () => {
  const before = requests;
  const big = await pay(crypto.randomUUID(), { note: 'x'.repeat(5000) });
  assert.equal(big.status, 413);
  assert.match((await big.json()).detail, /4096/);
  assert.equal(requests, before);
  const key = crypto.randomUUID();
  const large = await pay(key, { amount: 1 }, { headers: { 'x-test-response-bytes': '20000' } });
  assert.equal(large.status, 201);
  assert.ok((await large.text()).length > 20000);
  const retry = await pay(key, { amount: 1 });
  assert.equal(retry.status, 409);
  const document = await retry.json();
  assert.equal(document.type, 'urn:idempotency-gateway:response-not-replayable');
  assert.match(document.detail, /201/);
  assert.equal(charges.get(`"${key}"`), 1);
});

test('with the coordinator down nothing runs', async () => {
  const down = new Coordinator('127.0.0.1:1', { timeoutMs: 1000 });
  const isolated = await listen(app(down));
  try {
    const before = requests;
    const answer = await fetch(`http://127.0.0.1:${isolated.address().port}/payments`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': '"down-1"' }, body: '{"amount":1}',
    });
    assert.equal(answer.status, 503);
    assert.equal((await answer.json()).type, 'urn:idempotency-gateway:coordinator-unavailable');
    assert.ok(Number(answer.headers.get('retry-after')) >= 1);
    assert.equal(requests, before);
  } finally {
    isolated.close();
    down.close();
  }
});

// Issue 26 item 2: the middleware's Begin is answered, the answer lost, and
// the same request (the same request_id) sent again when only a quarter of
// the 4 s lease and 0.2 s are left, as a gRPC retry after UNAVAILABLE would:
// it is handed its own attempt back with the original lease_expires_at. The
// first Extend used to come a third of the TTL after the answer, past that
// deadline.
test('a handed-back attempt is extended before its lease runs out', async () => {
  const lossy = new Coordinator(`127.0.0.1:${running.port}`, { owner: 'express-test' });
  const call = lossy.call.bind(lossy);
  let deadline = null;
  lossy.call = async (method, request, timeoutMs) => {
    if (method === 'Begin' && deadline === null) {
      const first = await call(method, request, timeoutMs);
      deadline = timestampMs(first.acquired.lease_expires_at);
      await sleep(Math.max(0, deadline - (Number(request.lease_ttl.seconds) * 250 + 200) - Date.now()));
    }
    return call(method, request, timeoutMs);
  };
  const application = express();
  application.use(idempotency(lossy, [{ methods: ['POST'], path: '/payments', namespace: 'express.handback', identity: caller, leaseTtl: 4, wait: 10 }]));
  let charged = 0;
  application.post('/payments', async (req, res) => {
    charged++;
    await sleep(4500); // until well past the point where etcd frees a lock nobody extended
    res.status(201).json({ charged });
  });
  const listening = await listen(application);
  const key = crypto.randomUUID();
  const send = () => fetch(`http://127.0.0.1:${listening.address().port}/payments`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': `"${key}"` }, body: '{"amount":7}',
  });
  try {
    const first = send();
    while (deadline === null) await sleep(10);
    await sleep(Math.max(0, deadline - 150 - Date.now()));
    const seen = timestampMs((await coordinator.lookup(scopedNamespace({ namespace: 'express.handback' }, 'custom', Buffer.from('test-caller')), key)).lease_expires_at);
    const rival = await send(); // the route waits for the first
    const answered = await first;
    assert.ok(seen > deadline, 'not extended 150 ms before the handed-back lease ran out');
    assert.equal(answered.status, 201);
    assert.equal(answered.headers.get('idempotent-replayed'), null);
    assert.deepEqual([rival.status, rival.headers.get('idempotent-replayed')], [201, 'true']);
    assert.equal(charged, 1);
  } finally {
    listening.close();
    lossy.close();
  }
});

// Issue 27, 1: no route runs without saying who its caller is.
test('a route needs an identity and room for its scope', () => {
  const route = { methods: ['POST'], path: '/payments', namespace: 'payments' };
  for (const identity of [undefined, 'cookie', 'header:', 'header:X Key']) {
    assert.throws(() => idempotency(coordinator, [{ ...route, identity }]), /route "\/payments": identity is required/);
  }
  assert.throws(() => idempotency(coordinator, [{ ...route, namespace: 'n'.repeat(96), identity: 'authorization' }]),
    /namespace is 96 bytes.*128-byte namespace limit/);
  idempotency(coordinator, [{ ...route, namespace: 'n'.repeat(128), identity: 'none' }]);
  idempotency(coordinator, [{ ...route, namespace: 'n'.repeat(95), identity: 'header:X-Api-Key' }]);
});

// The same vector as clients/python/tests/test_asgi.py: SHA-256 of source, NUL, value; its first 16 bytes in hex.
test('the scoped namespace is the one every edge computes', () => {
  assert.equal(scopedNamespace({ namespace: 'payments.create' }, 'authorization', Buffer.from('Bearer alice')),
    'payments.create:8c85c84b1c7184d55e6bd2a4d7089d7f');
});
