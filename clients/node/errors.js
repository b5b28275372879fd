// Typed errors, keyed on the coordinator's google.rpc.ErrorInfo reason.
'use strict';

const protobuf = require('protobufjs');
const { status: Status } = require('@grpc/grpc-js');

class IdempotencyError extends Error {
  constructor(message, reason = '', metadata = {}) {
    super(message);
    this.name = this.constructor.name;
    this.reason = reason;
    this.metadata = metadata;
  }
}
/** The key was used before for a request with a different fingerprint (a client bug). */
class KeyReusedError extends IdempotencyError {
  /**
   * The top-level JSON members in which this request differs from the first
   * one, e.g. ['amount']; null when the coordinator could not tell (a raw
   * payload or fingerprint on either side, or not a JSON object).
   */
  get differingMembers() {
    const names = this.metadata.differing_members;
    return names === undefined ? null : JSON.parse(names);
  }
}
/** Another attempt took over or finished the record: stop, do not write. */
class LeaseLostError extends IdempotencyError {}
/** The coordinator or its store is unavailable (or overloaded): retry later. */
class UnavailableError extends IdempotencyError {}
/** A field is malformed or over a limit; `violations` maps field to description. */
class InvalidRequestError extends IdempotencyError {}

/** No, unknown or conflicting credentials (authentication is on). */
class AuthenticationError extends IdempotencyError {}

/** The request named a tenant other than the caller's. */
class PermissionDeniedError extends IdempotencyError {}
/** An admin asked to forget a record that an attempt has not finished. */
class RecordInProgressError extends IdempotencyError {}
/** No record under that tenant, namespace and key (never made, expired or forgotten). */
class RecordNotFoundError extends IdempotencyError {}
/** The operation failed for good earlier; this is the stored error, replayed. */
class ReplayedFailure extends IdempotencyError {
  constructor(code, message, details, attempt) {
    super(`${code}: ${message}`, 'REPLAYED_FAILURE');
    Object.assign(this, { code, details, attempt });
  }
}
/** Throw (or extend) from a side effect to release the key for another attempt. */
class RetryableError extends Error {}
/** Throw (or extend) from a side effect to store a failure that later calls replay. */
class PermanentError extends Error {
  constructor(code, message = '', details = Buffer.alloc(0)) {
    super(`${code}: ${message}`);
    Object.assign(this, { code, errorMessage: message, details });
  }
}

// Just enough of google.rpc to read grpc-status-details-bin.
const rpc = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: {
          nested: {
            Any: { fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } },
            Duration: { fields: { seconds: { type: 'int64', id: 1 }, nanos: { type: 'int32', id: 2 } } },
          },
        },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: 'string', id: 1 },
                domain: { type: 'string', id: 2 },
                metadata: { keyType: 'string', type: 'string', id: 3 },
              },
            },
            BadRequest: {
              fields: { field_violations: { rule: 'repeated', type: 'FieldViolation', id: 1 } },
              nested: {
                FieldViolation: { fields: { field: { type: 'string', id: 1 }, description: { type: 'string', id: 2 } } },
              },
            },
          },
        },
      },
    },
  },
});
const StatusProto = rpc.lookupType('google.rpc.Status');
const ErrorInfo = rpc.lookupType('google.rpc.ErrorInfo');
const BadRequest = rpc.lookupType('google.rpc.BadRequest');

/** The typed error for a failed call. */
function fromGrpcError(error) {
  let reason = '';
  let metadata = {};
  const violations = {};
  const raw = error.metadata && error.metadata.get('grpc-status-details-bin')[0];
  if (raw) {
    for (const detail of StatusProto.decode(raw).details) {
      if (detail.type_url.endsWith('google.rpc.ErrorInfo')) {
        const info = ErrorInfo.decode(detail.value);
        reason = info.reason;
        metadata = info.metadata || {};
      } else if (detail.type_url.endsWith('google.rpc.BadRequest')) {
        for (const v of BadRequest.decode(detail.value).field_violations) violations[v.field] = v.description;
      }
    }
  }
  const message = `${Status[error.code] ?? error.code}: ${error.details}`;
  if (reason === 'IDEMPOTENCY_KEY_REUSED') return new KeyReusedError(message, reason, metadata);
  if (reason === 'LEASE_LOST' || reason === 'ALREADY_FINISHED') return new LeaseLostError(message, reason, metadata);
  if (reason === 'RECORD_IN_PROGRESS') return new RecordInProgressError(message, reason, metadata);
  if (reason === 'RECORD_NOT_FOUND') return new RecordNotFoundError(message, reason, metadata);
  if (reason === 'INVALID_REQUEST' || error.code === Status.INVALID_ARGUMENT) {
    return Object.assign(new InvalidRequestError(message, 'INVALID_REQUEST'), { violations });
  }
  if (error.code === Status.UNAUTHENTICATED) return new AuthenticationError(message, reason, metadata);
  if (error.code === Status.PERMISSION_DENIED) return new PermissionDeniedError(message, reason, metadata);
  if ([Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED, Status.DEADLINE_EXCEEDED].includes(error.code)) {
    return new UnavailableError(message, reason, metadata);
  }
  return new IdempotencyError(message, reason, metadata);
}

module.exports = {
  IdempotencyError,
  KeyReusedError,
  LeaseLostError,
  UnavailableError,
  InvalidRequestError,
  AuthenticationError,
  PermissionDeniedError,
  RecordInProgressError,
  RecordNotFoundError,
  ReplayedFailure,
  RetryableError,
  PermanentError,
  fromGrpcError,
};
