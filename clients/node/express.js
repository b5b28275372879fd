// An Express middleware that applies the IETF httpapi `Idempotency-Key`
// header rules, as the coordinator's HTTP gateway and the Python ASGI
// middleware do:
//
//   const { idempotency } = require('idempotency-client/express');
//   app.use(idempotency(coordinator, [
//     { methods: ['POST'], path: '/payments', namespace: 'payments.create', identity: 'authorization', wait: 10 },
//   ]));
//
// Records are scoped by the caller: each route names where its caller's
// identity comes from (`identity`, required: 'authorization',
// 'header:<Name>', 'none', or a function of `req`), and the coordinator
// namespace is the route's plus a digest of that identity, so one caller never
// gets another's answer, nor learns that its key exists.
//
// Put it before any body parser: on a matching route it reads the body itself
// and sets `req.body` (parsed JSON for a JSON request, else a Buffer). A
// missing or malformed key is 400, as is a JSON body with a number that
// canonical JSON would change (named by JSON Pointer; see json-numbers.js);
// a keyed request without an identity is 401; a body over the limit 413, a
// key reused for another request 422 (naming the JSON members that differ), a
// retry while the first runs 409 with Retry-After (or, with `wait`, the first
// one's answer), and a retry after it finished gets the stored status, headers
// and body with `Idempotent-Replayed: true`, without running the handler.
// 401, 403, 407, 408, 425, 429, 5xx and `retryable4xx` answers release the
// key. Once the handler has answered it never runs again for that key: an
// answer that cannot be stored (too large, broken off, Complete failing after
// retries) ends the record as not replayable. A client that hangs up in the
// middle of its body begins nothing. Every answer on a matching route carries
// `Cache-Control: no-store`, even when the handler sets its own; answers the
// middleware writes itself are RFC 9457 problem documents. The fencing-token
// and recovered headers are removed from every request and set only on an
// acquired attempt. A route matches as Express routes do: case-insensitively
// and with an optional trailing slash, unless the app sets 'case sensitive
// routing' or 'strict routing'. Answers are stored as `message/http`, the
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
// Answers that say the request was not processed, so a retry must run it:
// released by default, beside every 5xx and a route's `retryable4xx`.
const RELEASING_4XX = [401, 403, 407, 408, 425, 429];
const DEFAULT_FENCING_TOKEN_HEADER = 'idempotency-fencing-token';
const DEFAULT_RECOVERED_HEADER = 'idempotency-recovered';
// The coordinator's namespace limit, and what identity scoping appends: ':' and 32 hex digits.
const MAX_NAMESPACE_BYTES = 128;
const IDENTITY_SUFFIX_BYTES = 33;
// Marks a request whose client hung up before its body was whole.
const CLIENT_GONE = Symbol('client gone');

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
  fencingTokenHeader: DEFAULT_FENCING_TOKEN_HEADER,
  recoveredHeader: DEFAULT_RECOVERED_HEADER,
};

/** The route's path as a RegExp, matching as Express routes do under the app's two routing settings. */
function pattern(path, { caseSensitive, strict }) {
  const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const body = path.split('/').map((s) => (/^\{\w+\}$/.test(s) ? '[^/]+' : escape(s))).join('/');
  return new RegExp(`^${body}${strict ? '' : '/?'}$`, caseSensitive ? '' : 'i');
}

/** `{ source, header }` for a route's identity setting; throws naming the route and `identity`. */
function identitySource(route) {
  const { identity } = route;
  if (typeof identity === 'function') return { source: 'custom', header: null };
  if (identity === 'none') return { source: 'none', header: null };
  if (identity === 'authorization') return { source: 'authorization', header: 'authorization' };
  if (typeof identity === 'string' && /^header:[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(identity)) {
    const header = identity.slice('header:'.length).toLowerCase();
    return { source: `header:${header}`, header };
  }
  throw new TypeError(`route ${JSON.stringify(route.path)}: identity is required: 'authorization', 'header:<Name>', 'none' or a function of req (got ${String(identity)})`);
}

/** The route's namespace plus the first 16 bytes of SHA-256(source, NUL, value) in hex, as the gateway scopes it. */
function scopedNamespace(route, source, value) {
  const digest = crypto.createHash('sha256').update(source).update(Buffer.from([0])).update(value).digest('hex');
  return `${route.namespace}:${digest.slice(0, 32)}`;
}

/** Every value of the header `name` (lower case) the client sent, in order. */
function fieldValues(req, name) {
  const values = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i].toLowerCase() === name) values.push(req.rawHeaders[i + 1]);
  }
  return values;
}

/** The coordinator namespace of this caller's records on `route`; null when the request carries no identity. */
function namespaceOf(route, req) {
  if (route.identitySource.source === 'none') return route.namespace;
  let value;
  if (route.identitySource.header) {
    // Every field of that name, as the gateway and the ASGI middleware see
    // it: Node keeps only the first Authorization in req.headers.
    const sent = fieldValues(req, route.identitySource.header);
    value = sent.length === 0 ? undefined : Buffer.from(sent.join(', '), 'latin1');
  } else {
    value = route.identity(req);
    if (value !== undefined && value !== null && !Buffer.isBuffer(value)) value = Buffer.from(String(value), 'utf8');
  }
  if (!value || !value.toString('latin1').trim()) return null;
  return scopedNamespace(route, route.identitySource.source, value);
}

function identityMissing(route) {
  const { header } = route.identitySource;
  const said = header ? `the ${header.replace(/(^|-)\w/g, (c) => c.toUpperCase())} header` : "the application's identity function";
  return problem(401, 'identity-missing', "The caller's identity is missing", `This route keeps each caller's Idempotency-Keys apart by ${said}, and this request has no value there.`);
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
  if (!key.trim()) throw new TypeError(`${HEADER} must not be only whitespace`);
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
 * it (a non-JSON body counts by its digest and its Content-Type); throws InexactNumberError for a JSON body with a number canonical JSON
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
  // The same bytes as text and as a form are two requests.
  request.content_type = String(req.headers['content-type'] || '').trim();
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

/**
 * The whole body; null once it is over `limit`; CLIENT_GONE when the client
 * hangs up first (never rejects: on Express 4 a rejection here was unhandled
 * and took the whole server down).
 */
function readBody(req, limit) {
  return new Promise((resolve) => {
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
    // The first of these settles the promise; after 'end' they change nothing.
    req.on('error', () => resolve(CLIENT_GONE));
    req.on('close', () => resolve(CLIENT_GONE));
  });
}

/**
 * Runs the rest of the chain and keeps its whole answer instead of sending
 * it. `brokenAfter` is the status the handler had sent (writeHead, write)
 * when the answer ended with another one: it failed mid-answer and an error
 * handler answered instead.
 */
function capture(req, res, next) {
  return new Promise((resolve, reject) => {
    const original = { write: res.write, end: res.end, writeHead: res.writeHead };
    const chunks = [];
    let sent = null; // the status once the handler has sent its head
    const chunk = (data, encoding) => (data === undefined || data === null || typeof data === 'function' ? null : Buffer.from(data, typeof encoding === 'string' ? encoding : undefined));
    res.writeHead = (status, reason, headers) => {
      res.statusCode = status;
      sent = sent ?? status;
      const fields = typeof reason === 'object' ? reason : headers;
      for (const [name, value] of Object.entries(fields || {})) res.setHeader(name, value);
      return res;
    };
    res.write = (data, encoding) => {
      sent = sent ?? res.statusCode;
      const bytes = chunk(data, encoding);
      if (bytes) chunks.push(bytes);
      return true;
    };
    res.end = (data, encoding) => {
      const bytes = chunk(data, encoding);
      const brokenAfter = sent !== null && sent !== res.statusCode ? sent : null;
      if (brokenAfter !== null) chunks.length = 0; // the error handler's answer, without the broken one's start
      if (bytes) chunks.push(bytes);
      Object.assign(res, original);
      resolve({ status: res.statusCode, headers: res.getHeaders(), body: Buffer.concat(chunks), brokenAfter });
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

/** Sets Cache-Control: no-store as the head goes out, whatever the handler set before. */
function noStore(res) {
  const { writeHead } = res;
  res.writeHead = function writeHeadNoStore(status, ...rest) {
    res.setHeader('cache-control', 'no-store');
    const fields = rest.map((arg) => {
      if (!arg || typeof arg !== 'object' || Array.isArray(arg)) return arg;
      return Object.fromEntries(Object.entries(arg).filter(([name]) => name.toLowerCase() !== 'cache-control'));
    });
    return writeHead.call(this, status, ...fields);
  };
}

class Release extends Error {
  constructor(answer) {
    super(`the handler answered ${answer.status}`);
    this.answer = answer;
  }
}

/** The handler answered, but its answer cannot be stored: the request ran, and a retry must learn that, not run it again. */
class NotStored extends errors.PermanentError {
  constructor(answer, status, why) {
    super(RESPONSE_NOT_STORED, `the request was processed (status ${status}), but its response (${why}) was not stored, so it cannot be replayed`);
    this.answer = answer;
  }
}

/**
 * The middleware for `routes` ({ methods, path, namespace, identity, ...options }),
 * calling `coordinator`; throws naming the route and the setting when one is
 * missing or malformed.
 */
function idempotency(coordinator, routes) {
  const compiled = routes.map((route) => {
    const checked = { ...ROUTE_DEFAULTS, ...route };
    checked.identitySource = identitySource(checked);
    const namespaceBytes = Buffer.byteLength(String(checked.namespace));
    if (checked.identitySource.source !== 'none' && namespaceBytes + IDENTITY_SUFFIX_BYTES > MAX_NAMESPACE_BYTES) {
      throw new TypeError(`route ${JSON.stringify(checked.path)}: namespace is ${namespaceBytes} bytes; scoped by identity it gets ${IDENTITY_SUFFIX_BYTES} more, over the coordinator's ${MAX_NAMESPACE_BYTES}-byte namespace limit`);
    }
    if (checked.identitySource.source === 'none') console.warn(`idempotency: route ${checked.path} has identity 'none': every caller shares this route's keys`);
    checked.releases = (status) => status >= 500 || RELEASING_4XX.includes(status) || checked.retryable4xx.includes(status);
    checked.patterns = new Map();
    return checked;
  });
  // Every route's, and the default names: a client never sets them, on any path.
  const setOnlyHere = new Set([DEFAULT_FENCING_TOKEN_HEADER, DEFAULT_RECOVERED_HEADER]);
  for (const route of compiled) {
    setOnlyHere.add(route.fencingTokenHeader.toLowerCase());
    setOnlyHere.add(route.recoveredHeader.toLowerCase());
  }
  const matches = (route, req) => {
    const settings = { caseSensitive: req.app.enabled('case sensitive routing'), strict: req.app.enabled('strict routing') };
    const id = `${settings.caseSensitive}/${settings.strict}`;
    if (!route.patterns.has(id)) route.patterns.set(id, pattern(route.path, settings));
    return route.methods.includes(req.method) && route.patterns.get(id).test(req.path);
  };
  return async function idempotencyKey(req, res, next) {
    stripHeaders(req, setOnlyHere);
    const route = compiled.find((r) => matches(r, req));
    if (!route) return next();
    try {
      await guard(coordinator, route, req, res, next);
    } catch (error) {
      // Express 4 does not catch a rejected promise: an error must reach next(), never the process.
      if (res.headersSent) res.destroy(error);
      else next(error);
    }
  };
}

/** Removes `names` from the request's headers, as Express and its handlers read them. */
function stripHeaders(req, names) {
  for (const name of names) delete req.headers[name];
  const raw = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (!names.has(req.rawHeaders[i].toLowerCase())) raw.push(req.rawHeaders[i], req.rawHeaders[i + 1]);
  }
  req.rawHeaders.splice(0, req.rawHeaders.length, ...raw);
}

/** One request on a protected route. */
async function guard(coordinator, route, req, res, next) {
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
    noStore(res);
    return next();
  }
  const namespace = namespaceOf(route, req);
  if (namespace === null) return send(res, identityMissing(route));
  const body = await readBody(req, route.maxRequestBytes);
  if (body === CLIENT_GONE) return undefined; // nothing was begun, and nobody is left to answer
  if (body === null) {
    const detail = `The request body is over this route's limit of ${route.maxRequestBytes} bytes.`;
    return send(res, problem(413, 'request-body-too-large', 'Request body too large', detail));
  }
  let fingerprinted;
  try {
    fingerprinted = fingerprintPayload(route, req, body);
  } catch (error) {
    if (!(error instanceof InexactNumberError)) throw error;
    const title = 'A JSON number cannot be fingerprinted exactly';
    return send(res, problem(400, 'json-number-inexact', title, error.message, { members: { pointer: error.pointer } }));
  }
  // Downstream handlers get the body this middleware read (body parsers skip a request with _body set).
  req.body = isJson(req.headers['content-type']) ? safeJson(body) : body;
  req._body = true;
  return send(res, await protect(coordinator, route, namespace, key, req, res, next, fingerprinted));
}

function safeJson(body) {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return body;
  }
}

async function protect(coordinator, route, namespace, key, req, res, next, [json, ignoreFields]) {
  // Set as the attempt goes: the attempt once acquired, the answer once the handler has answered.
  let acquired;
  let answered;
  const runHandler = async (attempt) => {
    acquired = attempt;
    req.headers[route.fencingTokenHeader.toLowerCase()] = String(attempt.fencingToken);
    if (attempt.recovered) req.headers[route.recoveredHeader.toLowerCase()] = 'true';
    answered = await capture(req, res, next);
    const { brokenAfter } = answered;
    if (route.releases(answered.status) && (brokenAfter === null || route.releases(brokenAfter))) throw new Release(answered);
    if (brokenAfter !== null) throw new NotStored(answered, brokenAfter, 'it broke off');
    if (answered.body.length > route.maxStoredResponseBytes) {
      throw new NotStored(answered, answered.status, `more than the ${route.maxStoredResponseBytes} bytes this route stores`);
    }
    const keep = [...ALWAYS_REPLAYED, ...route.replayHeaders.map((h) => h.toLowerCase())];
    return { response: encodeStored(answered, keep), content_type: MEDIA_TYPE, status_code: answered.status };
  };
  let outcome;
  try {
    outcome = await coordinator.run(namespace, key, runHandler, {
      json, ignoreFields, leaseTtl: route.leaseTtl, wait: route.wait, giveUpAfter: route.wait, retention: route.retention,
    });
  } catch (error) {
    if (error instanceof Release || error instanceof NotStored) return error.answer;
    if (!(error instanceof errors.IdempotencyError)) throw error;
    if (answered) return answeredButNotStored(coordinator, route, namespace, key, req, acquired, answered, error);
    return notBegun(route, req, res, next, error);
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

/**
 * The handler answered and Complete failed: the client still gets the answer,
 * and the record ends not replayable so that no retry runs it again (failOpen
 * is about Begin only: the handler never runs twice).
 */
async function answeredButNotStored(coordinator, route, namespace, key, req, attempt, answered, error) {
  if (error instanceof errors.LeaseLostError) {
    console.warn(`idempotency: lease lost on ${req.method} ${req.path} while the handler worked; its answer is not stored`);
    return answered;
  }
  const refused = error instanceof errors.InvalidRequestError;
  const why = refused ? "over the coordinator's result limit" : `not stored: ${error.message}`;
  // A coordinator that refused the answer is there to take the mark; one that
  // stayed away while Complete was retried for a whole lease gets one more try.
  try {
    await coordinator.fail(namespace, key, attempt, new NotStored(answered, answered.status, why), {
      retention: route.retention, patienceMs: refused ? route.leaseTtl * 1000 : 0,
    });
  } catch (failed) {
    // The lease lapses; a retry after that takes over (with a higher fencing token).
    console.error(`idempotency: cannot store the handler's answer on ${req.path} (${error.message}) nor mark it not replayable (${failed.message})`);
  }
  return answered;
}

/** The answer to a Begin that did not acquire: the handler has not run. */
function notBegun(route, req, res, next, error) {
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
  console.error(`idempotency: the coordinator refused the middleware's call: ${error.message}`);
  const detail = "The request was not forwarded, so it has not run; the application's log says why.";
  return problem(500, 'gateway-misconfigured', 'The idempotency middleware is misconfigured', detail);
}

module.exports = { idempotency, parseKey, fingerprintPayload, scopedNamespace, InexactNumberError };
