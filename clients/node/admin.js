// The operators' path (idempotency.v1.AdminService): list a namespace's
// records and forget a finished one so its key can be used again. The server
// serves it only with --admin-tenants, to callers authenticated as one of
// those tenants; every call is logged there with who made it.
//
//   const admin = new Admin(address, { credentials: opsCredentials });
//   for await (const { key, record } of admin.records('acme', 'payments.create')) console.log(key, record.state);
//   await admin.forget('acme', 'payments.create', 'order-9b21', 'refund re-run, ticket 4711');
'use strict';

const grpc = require('@grpc/grpc-js');
const { loadService, unary } = require('./rpc');

class Admin {
  constructor(target, { credentials, timeoutMs = 10000 } = {}) {
    const Service = loadService('idempotency/v1/admin.proto', 'AdminService');
    this.client = new Service(target, credentials || grpc.credentials.createInsecure());
    this.timeoutMs = timeoutMs;
  }

  close() {
    this.client.close();
  }

  /**
   * Every record of `namespace` as `{ key, record }`, a page at a time, in
   * the store's order. Listed records carry no stored result or error
   * (Coordinator.lookup reads those).
   */
  async *records(tenant, namespace, { pageSize = 100 } = {}) {
    let pageToken = '';
    do {
      const page = await unary(
        this.client,
        'ListRecords',
        { tenant, namespace, page_size: pageSize, page_token: pageToken },
        this.timeoutMs,
      );
      yield* page.records;
      pageToken = page.next_page_token;
    } while (pageToken);
  }

  /**
   * Deletes a COMPLETED or FAILED record, so the next Begin with its key is a
   * new request; resolves to the record as it was. A record in progress
   * rejects with RecordInProgressError, an unknown one with RecordNotFoundError.
   */
  async forget(tenant, namespace, key, reason) {
    return (await unary(this.client, 'ForgetRecord', { tenant, namespace, key, reason }, this.timeoutMs)).forgotten;
  }
}

module.exports = { Admin };
