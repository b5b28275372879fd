// An Express middleware that applies the IETF httpapi `Idempotency-Key`
// header rules, as the coordinator's HTTP gateway and the Python ASGI
// middleware do:
//
//   const { idempotency } = require('idempotency-client/express');
//   app.use(idempotency(coordinator, [{ methods: ['POST'], path: '/payments', namespace: 'payments.create', wait: 10 }]));
//
// Put it before any body parser: on a matching route it reads the body itself
// and sets `req.body` (parsed JSON for a JSON request, else a Buffer). A
// missing or malformed key is 400, as is a JSON body with a number that
// canonical JSON would change (named by JSON Pointer; see json-numbers.js),
// a body over the limit 413, a key reused for
// another request 422 (naming the JSON members that differ), a retry while the
// first runs 409 with Retry-After (or, with `wait`, the first one's answer),
// and a retry after it finished gets the stored status, headers and body with
// `Idempotent-Replayed: true`, without running the handler. 5xx and
// `retryable4xx` answers release the key. Every answer on a matching route
// carries `Cache-Control: no-store`; answers the middleware writes itself are
// RFC 9457 problem documents. Answers are stored as `message/http`, the
// gateway's format.
'use strict';

const crypto = require('node:crypto');
const { parseItem } = require('structured-headers');
const errors = require('./errors');
const { firstInexactNumber } = require('./json-numbers');

const HEADER = 'Idempotency-Key';
const MAX_KEY_CHARS = 255;
const MEDIA_TYPE = 'message/http';
const RESPONSE_NOT_STORED = 'RESPONSE_NOT_STORED';
const ALWAYS_REPLAYED = ['content-type', 'content-encoding', 'location', 'etag'];
// The member under which the request line and chosen headers join a JSON body
// in the fingerprinted payload (the same layout as the Python middleware's).
const REQUEST_MEMBER = '$request';

const ROUTE_DEFAULTS = {
  keyRequired: true,
  leaseTtl: 30,
  wait: 0,
  fingerprintHeaders: [],
  ignoreFields: [],
  replayHeaders: [],
  retryable4xx: [],
  failOpen: false,
  maxRequestBytes: 1024 * 1024,
  maxStoredResponseBytes: 192 * 1024,
  fencingTokenHeader: 'idempotency-fencing-token',
};

function pattern(path) {
  const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${path.split('/').map((s) => (/^\{\w+\}$/.test(s) ? '[^/]+' : escape(s))).join('/')}$`);
}

function problem(status, name, title, detail, extra = {}) {
  return {
    status,
    headers: { 'content-type': 'application/problem+json', ...(extra.retryAfter ? { 'retry-after': String(Math.max(1, Math.ceil(extra.retryAfter))) } : {}) },
    body: Buffer.from(JSON.stringify({ type: `urn:idempotency-gateway:${name}`, title, status, detail, ...(extra.members || {}) })),
  };
}

/** The key; null without one; throws a TypeError saying what is wrong with it. */
function parseKey(value) {
  if (value === undefined) return null;
  if (Array.isArray(value)) throw new TypeError(`${HEADER} must be sent once`);
  const shape = `${HEADER} must be a Structured Field string in double quotes, e.g. "8e03978e-40d5"`;
  let key;
  try {
    [key] = parseItem(value);
  } catch (error) {
    throw new TypeError(`${shape} (${error.message})`);
  }
  if (typeof key !== 'string') throw new TypeError(shape);
  if (key.length < 1 || key.length > MAX_KEY_CHARS) throw new TypeError(`${HEADER} must be 1..${MAX_KEY_CHARS} characters (got ${key.length})`);
  return key;
}

function isJson(contentType) {
  const essence = String(contentType || '').split(';')[0].trim().toLowerCase();
  return essence === 'application/json' || (essence.startsWith('application/') && essence.endsWith('+json'));
}

/**
 * A JSON body has a number that canonical JSON would change (JSON.parse
 * already has): two such requests could share a fingerprint.
 */
class InexactNumberError extends TypeError {
  constructor(pointer) {
    super(`The number at ${JSON.stringify(pointer)} would change in canonical JSON (RFC 8785 holds numbers as IEEE 754 doubles), so it could not be told apart from another number; send it as a string.`);
    this.pointer = pointer;
  }
}

/**
 * The JSON payload Begin fingerprints, and the ignore_fields that apply to
 * it; throws InexactNumberError for a JSON body with a number canonical JSON
 * would change.
 */
function fingerprintPayload(route, req, body) {
  const url = new URL(req.originalUrl, 'http://host');
  const headers = {};
  for (const name of [...route.fingerprintHeaders].map((h) => h.toLowerCase()).sort()) {
    const value = req.headers[name];
    headers[name] = value === undefined ? [] : [].concat(value);
  }
  const request = { method: req.method, path: url.pathname, query: url.search.replace(/^\?/, ''), headers };
  if (isJson(req.headers['content-type'])) {
    const text = body.toString('utf8');
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const inexact = parsed === undefined ? null : firstInexactNumber(text);
    if (inexact !== null) throw new InexactNumberError(inexact);
    if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) && !(REQUEST_MEMBER in parsed)) {
      return [{ ...parsed, [REQUEST_MEMBER]: request }, route.ignoreFields];
    }
    if (parsed !== undefined) return [{ [REQUEST_MEMBER]: request, $body: parsed }, route.ignoreFields.map((p) => `/$body${p}`)];
  }
  return [{ [REQUEST_MEMBER]: request, $body_sha256: crypto.createHash('sha256').update(body).digest('hex') }, []];
}

function encodeStored(answer, keep) {
  const lines = [`HTTP/1.1 ${answer.status} `];
  for (const [name, value] of Object.entries(answer.headers)) {
    if (keep.includes(name.toLowerCase())) for (const v of [].concat(value)) lines.push(`${name.toLowerCase()}: ${v}`);
  }
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), answer.body]);
}

function decodeStored(data) {
  const end = data.indexOf('\r\n\r\n');
  const head = end < 0 ? '' : data.subarray(0, end).toString('latin1');
  if (!head.startsWith('HTTP/1.1 ')) throw new TypeError('the stored response is not message/http');
  const [statusLine, ...headerLines] = head.split('\r\n');
  const headers = {};
  for (const line of headerLines) {
    const at = line.indexOf(':');
    const name = line.slice(0, at).trim().toLowerCase();
    const value = line.slice(at + 1).trim();
    headers[name] = name in headers ? [].concat(headers[name], value) : value;
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: data.subarray(end + 4) };
}

function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    if (Number(req.headers['content-length']) > limit) return resolve(null);
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        resolve(null);
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Runs the rest of the chain and keeps its whole answer instead of sending it. */
function capture(req, res, next) {
  return new Promise((resolve, reject) => {
    const original = { write: res.write, end: res.end, writeHead: res.writeHead };
    const chunks = [];
    const chunk = (data, encoding) => (data === undefined || data === null || typeof data === 'function' ? null : Buffer.from(data, typeof encoding === 'string' ? encoding : undefined));
    res.writeHead = (status, reason, headers) => {
      res.statusCode = status;
      const fields = typeof reason === 'object' ? reason : headers;
      for (const [name, value] of Object.entries(fields || {})) res.setHeader(name, value);
      return res;
    };
    res.write = (data, encoding) => {
      const bytes = chunk(data, encoding);
      if (bytes) chunks.push(bytes);
      return true;
    };
    res.end = (data, encoding) => {
      const bytes = chunk(data, encoding);
      if (bytes) chunks.push(bytes);
      Object.assign(res, original);
      resolve({ status: res.statusCode, headers: res.getHeaders(), body: Buffer.concat(chunks) });
      return res;
    };
    try {
      next();
    } catch (error) {
      Object.assign(res, original);
      reject(error);
    }
  });
}

function send(res, answer) {
  for (const name of Object.keys(res.getHeaders())) res.removeHeader(name);
  res.statusCode = answer.status;
  for (const [name, value] of Object.entries(answer.headers)) {
    if (!['content-length', 'transfer-encoding', 'cache-control', 'connection'].includes(name.toLowerCase())) res.setHeader(name, value);
  }
  res.setHeader('cache-control', 'no-store');
  res.setHeader('content-length', answer.body.length);
  res.end(answer.body);
}

class Release extends Error {
  constructor(answer) {
    super(`the handler answered ${answer.status}`);
    this.answer = answer;
  }
}

class NotStored extends errors.PermanentError {
  constructor(answer, limit) {
    super(RESPONSE_NOT_STORED, `the request was processed (status ${answer.status}), but its response (more than ${limit} bytes) was not stored, so it cannot be replayed`);
    this.answer = answer;
  }
}

/** The middleware for `routes` ({ methods, path, namespace, ...options }), calling `coordinator`. */
function idempotency(coordinator, routes) {
  const compiled = routes.map((route) => ({ ...ROUTE_DEFAULTS, ...route, regex: pattern(route.path) }));
  return async function idempotencyKey(req, res, next) {
    const route = compiled.find((r) => r.methods.includes(req.method) && r.regex.test(req.path));
    if (!route) return next();
    let key;
    try {
      key = parseKey(req.headers['idempotency-key']);
    } catch (error) {
      return send(res, problem(400, 'idempotency-key-malformed', 'Idempotency-Key is malformed', error.message, { members: { header: HEADER } }));
    }
    if (key === null) {
      if (route.keyRequired) {
        const detail = `This request needs an ${HEADER} header, e.g. ${HEADER}: "<uuid>".`;
        return send(res, problem(400, 'idempotency-key-missing', 'Idempotency-Key is missing', detail, { members: { header: HEADER } }));
      }
      res.setHeader('cache-control', 'no-store');
      return next();
    }
    const body = await readBody(req, route.maxRequestBytes);
    if (body === null) {
      const detail = `The request body is over this route's limit of ${route.maxRequestBytes} bytes.`;
      return send(res, problem(413, 'request-body-too-large', 'Request body too large', detail));
    }
    let fingerprinted;
    try {
      fingerprinted = fingerprintPayload(route, req, body);
    } catch (error) {
      if (!(error instanceof InexactNumberError)) return next(error);
      const title = 'A JSON number cannot be fingerprinted exactly';
      return send(res, problem(400, 'json-number-inexact', title, error.message, { members: { pointer: error.pointer } }));
    }
    // Downstream handlers get the body this middleware read (body parsers skip a request with _body set).
    req.body = isJson(req.headers['content-type']) ? safeJson(body) : body;
    req._body = true;
    try {
      send(res, await protect(coordinator, route, key, req, res, next, fingerprinted));
    } catch (error) {
      next(error);
    }
  };
}

function safeJson(body) {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return body;
  }
}

async function protect(coordinator, route, key, req, res, next, [json, ignoreFields]) {
  let answered;
  const runHandler = async (attempt) => {
    req.headers[route.fencingTokenHeader.toLowerCase()] = String(attempt.fencingToken);
    answered = await capture(req, res, next);
    if (answered.status >= 500 || route.retryable4xx.includes(answered.status)) throw new Release(answered);
    if (answered.body.length > route.maxStoredResponseBytes) throw new NotStored(answered, route.maxStoredResponseBytes);
    const keep = [...ALWAYS_REPLAYED, ...route.replayHeaders.map((h) => h.toLowerCase())];
    return { response: encodeStored(answered, keep), content_type: MEDIA_TYPE, status_code: answered.status };
  };
  let outcome;
  try {
    outcome = await coordinator.run(route.namespace, key, runHandler, {
      json, ignoreFields, leaseTtl: route.leaseTtl, wait: route.wait, giveUpAfter: route.wait, retention: route.retention,
    });
  } catch (error) {
    if (error instanceof Release || error instanceof NotStored) return error.answer;
    if (error instanceof errors.KeyReusedError) {
      const differing = error.differingMembers;
      let detail = 'This Idempotency-Key was already used with a different method, path, query, headers or body.';
      if (differing && differing.length) detail += ` Members that differ: ${differing.join(', ')}.`;
      return problem(422, 'idempotency-key-reused', 'Idempotency-Key was used for a different request', detail, { members: { differing_members: differing } });
    }
    if (error instanceof errors.ReplayedFailure) {
      if (error.code === RESPONSE_NOT_STORED) return problem(409, 'response-not-replayable', 'The response to this request cannot be replayed', error.message);
      return problem(409, 'request-failed', 'The request with this Idempotency-Key failed', error.message);
    }
    if (error instanceof errors.UnavailableError) {
      if (error.reason === 'IN_PROGRESS') {
        const detail = "Retry after the time in Retry-After; the first request's answer will be replayed.";
        return problem(409, 'request-in-progress', 'A request with this Idempotency-Key is in progress', detail, { retryAfter: error.retryAfter || 1 });
      }
      if (route.failOpen) {
        console.warn(`idempotency: coordinator unavailable, forwarding ${req.method} ${req.path} WITHOUT protection (failOpen)`);
        return capture(req, res, next);
      }
      const detail = 'The request was not forwarded, so it has not run; retry after the time in Retry-After.';
      return problem(503, 'coordinator-unavailable', 'Idempotency protection is unavailable', detail, { retryAfter: error.retryAfter || 1 });
    }
    if (error instanceof errors.LeaseLostError && answered) {
      console.warn(`idempotency: lease lost on ${req.method} ${req.path} while the handler worked; its answer is not stored`);
      return answered;
    }
    if (error instanceof errors.IdempotencyError) {
      console.error(`idempotency: the coordinator refused the middleware's call: ${error.message}`);
      const detail = "The request was not forwarded, so it has not run; the application's log says why.";
      return problem(500, 'gateway-misconfigured', 'The idempotency middleware is misconfigured', detail);
    }
    throw error;
  }
  if (!outcome.replayed) return answered;
  try {
    const replayed = decodeStored(outcome.response);
    replayed.headers['idempotent-replayed'] = 'true';
    return replayed;
  } catch (error) {
    return problem(409, 'response-not-replayable', 'The response to this request cannot be replayed', error.message);
  }
}

module.exports = { idempotency, parseKey, fingerprintPayload, InexactNumberError };
