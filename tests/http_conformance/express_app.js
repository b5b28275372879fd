// The Express targets: an Express app (4 or 5) behind the Express middleware,
// serving the routes of routes.json as recording_service.py does (the same
// test-only headers, the same records at GET /_executions).
//
//   node express_app.js <express4|express> <port> <coordinator address> <target config.json>
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const NODE_CLIENT = path.resolve(__dirname, '..', '..', 'clients', 'node');
const [expressModule, port, coordinatorAddress, configPath] = process.argv.slice(2);
const express = require(path.join(NODE_CLIENT, 'node_modules', expressModule));
const { Coordinator } = require(NODE_CLIENT);
const { idempotency } = require(path.join(NODE_CLIENT, 'express.js'));

const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
const executions = [];

function handler(name) {
  return async (req, res, next) => {
    const execution = executions.length + 1;
    executions.push({
      handler: name,
      path: req.path,
      body: Buffer.isBuffer(req.body) ? req.body.toString('utf8') : JSON.stringify(req.body ?? null),
      key: req.get('idempotency-key') ?? null,
      token: req.get('idempotency-fencing-token') ?? null,
      recovered: req.get('idempotency-recovered') ?? null,
      authorization: req.get('authorization') ?? null,
      api_key: req.get('x-api-key') ?? null,
      content_type: req.get('content-type') ?? null,
    });
    await new Promise((r) => setTimeout(r, Number(req.get('x-test-delay') || 0) * 1000));
    const status = Number(req.get('x-test-status') || 201);
    const answer = { handler: name, execution, token: req.get('idempotency-fencing-token') ?? null };
    if (req.get('x-test-break') === 'after-status') {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.write('{"partial":');
      return next(new Error('the handler broke off its answer (x-test-break)'));
    }
    answer.padding = 'x'.repeat(Number(req.get('x-test-body-bytes') || 0));
    res.status(status).location(`/payments/${execution}`);
    if (req.get('x-test-cache-control')) res.set('cache-control', req.get('x-test-cache-control'));
    res.json(answer);
  };
}

const routes = config.routes.map((route) => ({
  methods: ['POST'],
  path: route.path,
  namespace: route.namespace,
  keyRequired: (route.key || 'required') === 'required',
  leaseTtl: route.lease_ttl,
  wait: route.wait || 0,
  failOpen: Boolean(route.fail_open),
  maxStoredResponseBytes: route.max_stored_response_bytes || 192 * 1024,
  ...(route.identity === undefined ? {} : { identity: route.identity }),
}));
const app = express();
app.use(idempotency(new Coordinator(coordinatorAddress, { owner: 'conformance-express' }), routes));
app.use(express.json());
for (const route of config.routes) app.post(route.path, handler(route.name));
app.post('/unprotected', handler('unprotected'));
app.get('/_executions', (req, res) => res.json(executions));
app.listen(Number(port), '127.0.0.1', () => console.log('listening'));
