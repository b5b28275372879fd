// The helper against a coordinator with TLS and authentication on, with
// certificates made here: tenants come from a bearer token or a client
// certificate, never from the request.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const forge = require('node-forge');
const {
  Admin,
  Coordinator,
  AuthenticationError,
  PermissionDeniedError,
  RecordInProgressError,
  RecordNotFoundError,
} = require('..');
const { freePort, startCoordinator, untilReady } = require('./harness');

const TOKEN = `node-${crypto.randomBytes(16).toString('hex')}`;
const OPS_TOKEN = `node-ops-${crypto.randomBytes(16).toString('hex')}`;
const newKey = () => crypto.randomUUID();

// A certificate for `commonName` signed by `issuer` (self-signed without one).
function certificate({ commonName, issuer, ca = false, altNames = [], usage }) {
  const keys = forge.pki.rsa.generateKeyPair(2048);
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = `01${crypto.randomBytes(8).toString('hex')}`;
  cert.validity.notBefore = new Date(Date.now() - 5 * 60 * 1000);
  cert.validity.notAfter = new Date(Date.now() + 24 * 60 * 60 * 1000);
  cert.setSubject([{ name: 'commonName', value: commonName }]);
  cert.setIssuer(issuer ? issuer.cert.subject.attributes : cert.subject.attributes);
  const extensions = [{ name: 'basicConstraints', cA: ca, critical: true }];
  if (ca) extensions.push({ name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true });
  if (altNames.length) extensions.push({ name: 'subjectAltName', altNames });
  if (usage) extensions.push({ name: 'extKeyUsage', [usage]: true });
  cert.setExtensions(extensions);
  cert.sign(issuer ? issuer.keys.privateKey : keys.privateKey, forge.md.sha256.create());
  return {
    cert,
    keys,
    certPem: Buffer.from(forge.pki.certificateToPem(cert)),
    keyPem: Buffer.from(forge.pki.privateKeyToPem(keys.privateKey)),
  };
}

const ca = certificate({ commonName: 'node test CA', ca: true });
const serverCert = certificate({ commonName: 'localhost', issuer: ca, altNames: [{ type: 2, value: 'localhost' }], usage: 'serverAuth' });
const acmeCert = certificate({
  commonName: 'not-the-tenant', issuer: ca, altNames: [{ type: 6, value: 'spiffe://test.example/tenant/acme' }], usage: 'clientAuth',
});
const globexCert = certificate({
  commonName: 'globex', issuer: ca, altNames: [{ type: 6, value: 'spiffe://test.example/tenant/globex' }], usage: 'clientAuth',
});

let running, address;
const clients = [];

function credentialsOf({ token, cert } = {}) {
  const credentials = grpc.credentials.createSsl(ca.certPem, cert?.keyPem ?? null, cert?.certPem ?? null);
  if (!token) return credentials;
  const bearer = grpc.credentials.createFromMetadataGenerator((_, callback) => {
    const metadata = new grpc.Metadata();
    metadata.add('authorization', `Bearer ${token}`);
    callback(null, metadata);
  });
  return grpc.credentials.combineChannelCredentials(credentials, bearer);
}

function connect({ token, cert, tenant = '' } = {}) {
  const client = new Coordinator(address, { owner: 'node-tls', tenant, credentials: credentialsOf({ token, cert }) });
  clients.push(client);
  return client;
}

function connectAdmin(token) {
  const admin = new Admin(address, { credentials: credentialsOf({ token }) });
  clients.push(admin);
  return admin;
}

before(async () => {
  const healthPort = await freePort();
  running = await startCoordinator((dataDir) => {
    const file = (name, contents) => {
      fs.writeFileSync(path.join(dataDir, name), contents);
      return path.join(dataDir, name);
    };
    const digest = (token) => crypto.createHash('sha256').update(token).digest('hex');
    return [
      '--tls-cert', file('server.pem', serverCert.certPem), '--tls-key', file('server-key.pem', serverCert.keyPem),
      '--tls-client-ca', file('ca.pem', ca.certPem), '--tenant-uri-prefix', 'spiffe://test.example/tenant/',
      '--tokens-file', file('tokens', `acme ${digest(TOKEN)}\nops ${digest(OPS_TOKEN)}\n`),
      '--health-listen', `127.0.0.1:${healthPort}`, '--admin-tenants', 'ops',
    ];
  });
  address = `localhost:${running.port}`;
  await untilReady(connect({ token: TOKEN }));
});

after(() => {
  clients.forEach((client) => client.close());
  running?.stop();
});

test('a token and a certificate of one tenant share its records', async () => {
  const key = newKey();
  let calls = 0;
  const first = await connect({ token: TOKEN }).run('payments.create', key, async () => ++calls, { json: { amount: 1 } });
  const again = await connect({ cert: acmeCert }).run('payments.create', key, async () => ++calls, { json: { amount: 1 } });
  assert.equal(calls, 1);
  assert.equal(again.replayed, true);
  assert.deepEqual(again.response, first.response);
});

test('another tenant is denied and no credentials are refused', async () => {
  const key = newKey();
  const ranNothing = async () => assert.fail('the side effect ran');
  await assert.rejects(
    connect({ token: TOKEN, tenant: 'globex' }).run('payments.create', key, ranNothing, { json: { amount: 1 } }),
    PermissionDeniedError,
  );
  await assert.rejects(connect().run('payments.create', key, ranNothing, { json: { amount: 1 } }), AuthenticationError);
  const own = await connect({ cert: globexCert }).run('payments.create', key, async () => 'globex', { json: { amount: 1 } });
  assert.equal(own.replayed, false, "globex's record under the same key is its own");
});

test('an admin lists records and forgets a finished one', async () => {
  const namespace = `adminjs.${crypto.randomBytes(6).toString('hex')}`;
  const acme = connect({ token: TOKEN });
  const admin = connectAdmin(OPS_TOKEN);
  const effects = [];
  const charge = async (attempt) => {
    effects.push(attempt.attempt);
    return 'charged';
  };
  for (const key of ['k1', 'k2', 'k3']) await acme.run(namespace, key, charge, { json: { amount: 1 } });
  // An attempt still running cannot be forgotten, even by an admin.
  await acme.run(
    namespace,
    'k4',
    async () => {
      await assert.rejects(admin.forget('acme', namespace, 'k4', 'test'), RecordInProgressError);
      return 'done';
    },
    { json: { amount: 1 } },
  );

  const listed = [];
  for await (const entry of admin.records('acme', namespace, { pageSize: 2 })) listed.push(entry);
  assert.deepEqual(listed.map((entry) => entry.key), ['k1', 'k2', 'k3', 'k4']);
  for (const { record } of listed) {
    assert.equal(record.state, 'STATE_COMPLETED');
    assert.equal(record.result, null, 'a listed record carries no result');
  }

  const forgotten = await admin.forget('acme', namespace, 'k1', 'refund re-run, ticket 4711');
  assert.equal(forgotten.state, 'STATE_COMPLETED');
  assert.equal(Buffer.from(forgotten.result.response).toString(), 'charged');
  const again = await acme.run(namespace, 'k1', charge, { json: { amount: 2 } });
  assert.equal(again.replayed, false);
  assert.deepEqual(effects, [1, 1, 1, 1]);
  assert.equal((await acme.run(namespace, 'k2', charge, { json: { amount: 1 } })).replayed, true);

  await assert.rejects(admin.forget('acme', namespace, 'never-made', 'test'), RecordNotFoundError);
  const notAnAdmin = connectAdmin(TOKEN);
  await assert.rejects(notAnAdmin.records('acme', namespace).next(), PermissionDeniedError);
});
