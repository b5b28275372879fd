// Starts a real etcd and the real coordinator on free loopback ports, and
// stops both (and removes their data) when asked.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// `serverArgs(dataDir)` gives extra `serve` flags; `probe()` must resolve once
// the coordinator answers with etcd behind it.
async function startCoordinator(serverArgs = () => []) {
  const [clientPort, peerPort, grpcPort] = [await freePort(), await freePort(), await freePort()];
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'idem-node-'));
  const etcd = spawn(process.env.ETCD_BIN || 'etcd', [
    `--data-dir=${dataDir}/etcd`,
    `--listen-client-urls=http://127.0.0.1:${clientPort}`,
    `--advertise-client-urls=http://127.0.0.1:${clientPort}`,
    `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
    `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
    `--initial-cluster=default=http://127.0.0.1:${peerPort}`,
  ], { stdio: 'ignore' });
  const binary = process.env.IDEMPOTENCY_BIN || path.join(REPO, 'target', 'debug', 'idempotency-coordinator');
  const server = spawn(binary, [
    'serve', '--listen', `127.0.0.1:${grpcPort}`, '--etcd-endpoints', `http://127.0.0.1:${clientPort}`,
    '--metrics-listen', '127.0.0.1:0', ...serverArgs(dataDir),
  ], { stdio: 'ignore' });
  return {
    port: grpcPort,
    dataDir,
    stop() {
      server.kill();
      etcd.kill();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

// Waits until `coordinator` answers a Lookup with etcd behind it.
async function untilReady(coordinator) {
  for (let i = 0; ; i++) {
    try {
      await coordinator.lookup('health.check', 'probe');
      return;
    } catch (error) {
      if (error.reason === 'RECORD_NOT_FOUND') return; // etcd answered
      if (i > 600) throw error; // about 60 s: a loaded machine has needed more than 20
      await sleep(100);
    }
  }
}

module.exports = { freePort, sleep, startCoordinator, untilReady };
