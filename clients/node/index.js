// The helper: run a side effect at most once per idempotency key.
//
//   const coordinator = new Coordinator('127.0.0.1:50051', { owner: 'checkout-7' });
//   const outcome = await coordinator.run('payments.create', key, async (attempt) => charge(attempt.fencingToken), { json: cart });
//
// The side effect runs only if this call acquired the key; a retry of a
// finished key gets the stored result back instead (`outcome.replayed`). While
// it runs, heartbeats extend the lease, timed from the lease it was handed
// (see heartbeat.js). A thrown PermanentError stores a
// replayable failure; any other error releases the key. Either is re-thrown.
// Once the side effect has returned, Complete is retried while the
// coordinator is unavailable, for up to the lease's TTL (Complete is
// idempotent): the work is done and must not be lost to a blip.
'use strict';

const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const errors = require('./errors');
const { Admin } = require('./admin');
const { loadService, unary } = require('./rpc');
const { Lease, monotonic, timestampMs } = require('./heartbeat');

// Reasons an Extend gets once the attempt is over: stop heartbeating.
const LOST_REASONS = ['LEASE_LOST', 'ALREADY_FINISHED', 'RECORD_NOT_FOUND'];

// Retries only UNAVAILABLE (etcd or a replica briefly gone). Begin carries a
// request_id and Complete/Fail/Extend a fencing token, so the coordinator
// recognises a retry of a call whose answer was lost.
const SERVICE_CONFIG = {
  methodConfig: [
    {
      name: [{ service: 'idempotency.v1.CoordinatorService' }],
      retryPolicy: {
        maxAttempts: 5,
        initialBackoff: '0.1s',
        maxBackoff: '2s',
        backoffMultiplier: 2,
        retryableStatusCodes: ['UNAVAILABLE'],
      },
    },
  ],
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * `call()`, tried again with backoff (100 ms doubling to 2 s) while it is
 * UNAVAILABLE and `patienceMs` have not passed; rejects with its typed error.
 */
async function retrying(call, patienceMs) {
  const giveUp = Date.now() + patienceMs;
  for (let pause = 100; ; pause = Math.min(pause * 2, 2000)) {
    try {
      return await call();
    } catch (error) {
      if (!(error instanceof errors.UnavailableError) || Date.now() + pause >= giveUp) throw error;
    }
    await sleep(pause);
  }
}

const seconds = (s) => ({ seconds: Math.floor(s), nanos: Math.round((s - Math.floor(s)) * 1e9) });

function toResult(value) {
  if (value && typeof value === 'object' && ('response' in value || 'resource_ref' in value)) {
    const result = { content_type: value.content_type || '', status_code: value.status_code || 0 };
    if (value.resource_ref !== undefined) result.resource_ref = value.resource_ref;
    else result.response = Buffer.from(value.response);
    return result;
  }
  if (Buffer.isBuffer(value)) return { response: value, content_type: '', status_code: 0 };
  if (typeof value === 'string') return { response: Buffer.from(value), content_type: '', status_code: 0 };
  return { response: Buffer.from(JSON.stringify(value)), content_type: 'application/json', status_code: 0 };
}

function outcomeOf(result, replayed, attempt) {
  // Decoded results name their set oneof in `body`; results built here do not.
  const isRef = result.body ? result.body === 'resource_ref' : result.resource_ref !== undefined;
  return {
    response: isRef ? undefined : Buffer.from(result.response ?? []),
    resourceRef: isRef ? result.resource_ref : undefined,
    contentType: result.content_type,
    statusCode: result.status_code,
    replayed,
    attempt,
  };
}

/** A PermanentError is stored and replayed; anything else releases the key. */
function failRequest(ids, attempt, error, retention) {
  const permanent = error instanceof errors.PermanentError;
  const stored = permanent
    ? { code: error.code, message: error.errorMessage, details: error.details }
    : { code: String(error?.name || 'Error').slice(0, 128), message: String(error?.message || error).slice(0, 4096) };
  const fail = { ...ids, fencing_token: attempt.fencingToken, error: stored, retryable: !permanent };
  if (retention !== undefined && permanent) fail.retention = seconds(retention);
  return fail;
}

class Coordinator {
  constructor(target, { owner = '', tenant = '', timeoutMs = 10000, credentials } = {}) {
    const Service = loadService('idempotency/v1/coordinator.proto', 'CoordinatorService');
    this.client = new Service(target, credentials || grpc.credentials.createInsecure(), {
      'grpc.service_config': JSON.stringify(SERVICE_CONFIG),
      'grpc.enable_retries': 1,
    });
    Object.assign(this, { owner, tenant, timeoutMs });
  }

  close() {
    this.client.close();
  }

  call(method, request, timeoutMs = this.timeoutMs) {
    return unary(this.client, method, request, timeoutMs);
  }

  /**
   * Runs `sideEffect(attempt)` if this call owns `key` in `namespace`, and
   * resolves to its stored result; on a retry, resolves to the stored result
   * without running anything. Options: `json` (an object, fingerprinted as
   * canonical JSON; its Numbers are doubles already, so an id a double cannot
   * hold must be a string: JSON.parse has made 1234567890123456789 into
   * 1234567890123456800 before this sees it), `payload` (bytes or string, fingerprinted raw),
   * `ignoreFields`, `fingerprint`, `leaseTtl` (s), `wait` (s), `giveUpAfter`
   * (s), `retention` (s), `heartbeat` (default true).
   */
  async run(namespace, key, sideEffect, options = {}) {
    const { leaseTtl = 30, wait = 10, giveUpAfter = 60, heartbeat = true } = options;
    const request = {
      tenant: this.tenant,
      namespace,
      key,
      lease_ttl: seconds(leaseTtl),
      wait: seconds(wait),
      owner: this.owner,
      request_id: crypto.randomUUID(),
    };
    if (options.fingerprint) request.fingerprint = options.fingerprint;
    else if (options.json !== undefined) {
      request.payload = {
        data: Buffer.from(JSON.stringify(options.json)),
        canonicalization: 'CANONICALIZATION_JSON',
        ignore_fields: options.ignoreFields || [],
      };
    } else if (options.payload !== undefined) {
      request.payload = { data: Buffer.from(options.payload), canonicalization: 'CANONICALIZATION_RAW', ignore_fields: [] };
    } else throw new TypeError('give options.json, options.payload or options.fingerprint');

    const giveUp = Date.now() + giveUpAfter * 1000;
    for (;;) {
      const sentAt = monotonic();
      const response = await this.call('Begin', request, wait * 1000 + this.timeoutMs);
      switch (response.outcome) {
        case 'completed':
          return outcomeOf(response.completed.result, true, response.completed.attempt);
        case 'failed': {
          const e = response.failed.error;
          throw new errors.ReplayedFailure(e.code, e.message, e.details, response.failed.attempt);
        }
        case 'acquired': {
          const lease = Lease.answered(sentAt, timestampMs(response.acquired.lease_expires_at), Date.now(), leaseTtl * 1000);
          return this.own(request, response.acquired, lease, sideEffect, leaseTtl, options.retention, heartbeat);
        }
        default:
          if (Date.now() >= giveUp) {
            const after = response.in_progress.retry_after;
            const error = new errors.UnavailableError(`${namespace}/${key} still in progress after ${giveUpAfter}s`, 'IN_PROGRESS');
            error.retryAfter = after ? Number(after.seconds) + after.nanos / 1e9 : 1;
            throw error;
          }
          if (wait <= 0) await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async own(request, acquired, lease, sideEffect, leaseTtl, retention, heartbeat) {
    const ids = { tenant: request.tenant, namespace: request.namespace, key: request.key };
    const attempt = {
      fencingToken: acquired.fencing_token, // a decimal string: uint64 does not fit a JS number
      attempt: acquired.attempt,
      recovered: acquired.recovered || null,
      leaseLost: false,
    };
    const stopHeartbeat = heartbeat ? this.heartbeat(ids, attempt, leaseTtl, lease) : () => {};
    let value;
    try {
      value = await sideEffect(attempt);
    } catch (error) {
      stopHeartbeat();
      // The original error matters more; an unreleased key is abandoned and
      // taken over when its lease lapses.
      await this.call('Fail', failRequest(ids, attempt, error, retention)).catch(() => {});
      throw error;
    }
    stopHeartbeat();
    const result = toResult(value);
    const complete = { ...ids, fencing_token: attempt.fencingToken, result };
    if (retention !== undefined) complete.retention = seconds(retention);
    await retrying(() => this.call('Complete', complete), leaseTtl * 1000);
    return outcomeOf(result, false, attempt.attempt);
  }

  /**
   * Ends `attempt` as `run` does when its side effect throws `error` (a
   * PermanentError is stored, anything else releases the key), for callers
   * that finish an attempt themselves; retried while the coordinator is
   * unavailable, for up to `patienceMs`.
   */
  async fail(namespace, key, attempt, error, { retention, patienceMs = 0 } = {}) {
    const fail = failRequest({ tenant: this.tenant, namespace, key }, attempt, error, retention);
    await retrying(() => this.call('Fail', fail), patienceMs);
  }

  /**
   * Extends the lease a third of its time left after each send (the rule is
   * in heartbeat.js) until the returned function is called or the attempt is
   * lost.
   */
  heartbeat(ids, attempt, leaseTtl, lease) {
    let stopped = false;
    let timer = null;
    const next = (current) => {
      if (stopped || current === null) return;
      timer = setTimeout(async () => {
        next(await this.extend(ids, attempt, leaseTtl, current, () => stopped));
      }, Math.max(0, current.heartbeatAt() - monotonic()));
    };
    next(lease);
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }

  /**
   * The lease an Extend renewed, tried again while time is left; null once
   * stopped, or once the attempt is lost or its time ran out (then
   * attempt.leaseLost is set).
   */
  async extend(ids, attempt, leaseTtl, lease, stopped) {
    const request = { ...ids, fencing_token: attempt.fencingToken, lease_ttl: seconds(leaseTtl) };
    for (;;) {
      if (stopped()) return null;
      const sentAt = monotonic();
      try {
        const answer = await this.call('Extend', request, lease.extendTimeoutMs(sentAt, this.timeoutMs));
        return Lease.answered(sentAt, timestampMs(answer.lease_expires_at), Date.now(), leaseTtl * 1000);
      } catch (error) {
        if (LOST_REASONS.includes(error.reason) || lease.over(monotonic())) {
          attempt.leaseLost = true;
          return null;
        }
        // Unavailable or too slow: try again while time is left.
      }
      await new Promise((r) => setTimeout(r, lease.retryPauseMs(monotonic())));
    }
  }

  async lookup(namespace, key) {
    return (await this.call('Lookup', { tenant: this.tenant, namespace, key })).record;
  }
}

module.exports = { Coordinator, Admin, SERVICE_CONFIG, ...errors };
