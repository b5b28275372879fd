// Loading the coordinator's services from proto/ and calling them: one place
// for the loader's options (uint64 as decimal strings, enums by name) and for
// turning a failed call into the typed error.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const errors = require('./errors');

const PROTO_DIR = path.join(__dirname, 'proto');

/** The client constructor of `service` (e.g. 'AdminService') defined in `file`. */
function loadService(file, service) {
  const definition = protoLoader.loadSync(file, {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).idempotency.v1[service];
}

/** One unary call with a deadline; resolves to the answer or rejects with the typed error. */
function unary(client, method, request, timeoutMs) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: new Date(Date.now() + timeoutMs) }, (error, response) =>
      error ? reject(errors.fromGrpcError(error)) : resolve(response),
    );
  });
}

module.exports = { loadService, unary };
