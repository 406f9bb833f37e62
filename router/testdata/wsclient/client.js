'use strict';
// A WebSocket client on the npm ws package, as a Node user would write
// one: echo (text and binary) with a clean close, then server push ending
// in the app's close code. Prints "ok" and exits 0, or says what failed.
const WebSocket = require('ws');

const base = process.argv[2];
function fail(msg) {
  console.error(msg);
  process.exit(1);
}
setTimeout(() => fail('timed out'), 20000).unref();

function opened(ws) {
  return new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
}

async function echo() {
  const ws = new WebSocket(base + '/ws/echo');
  await opened(ws);
  for (const msg of ['hello from ws', Buffer.from([0, 1, 2, 255])]) {
    const got = new Promise((resolve) => ws.once('message', (data, isBinary) => resolve({ data, isBinary })));
    ws.send(msg);
    const { data, isBinary } = await got;
    if (Buffer.compare(Buffer.from(data), Buffer.from(msg)) !== 0 || isBinary !== Buffer.isBuffer(msg)) {
      fail(`echo of ${JSON.stringify(msg)}: got ${JSON.stringify(data)} (binary ${isBinary})`);
    }
  }
  const closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
  ws.close(1000, 'bye');
  const code = await closed;
  if (code !== 1000) fail(`echo: closed with ${code}, want 1000`);
}

async function push() {
  const ws = new WebSocket(base + '/ws/push?n=3&interval_ms=10');
  const msgs = [];
  ws.on('message', (data) => msgs.push(data.toString()));
  const code = await new Promise((resolve, reject) => {
    ws.once('close', (code) => resolve(code));
    ws.once('error', reject);
  });
  if (code !== 1000 || msgs.join(',') !== 'push 0,push 1,push 2') {
    fail(`push: closed with ${code} after ${JSON.stringify(msgs)}, want 1000 after 3 pushes`);
  }
}

(async () => {
  await echo();
  await push();
  console.log('ok');
  process.exit(0);
})().catch((e) => fail(String(e)));
