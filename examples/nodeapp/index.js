// ferry's sample app for Node.js: the same routes as examples/goapp, with
// no dependencies. Run: PORT=8080 node index.js
'use strict';
const http = require('node:http');

function intParam(url, name, max) {
  const v = url.searchParams.get(name);
  if (v === null || v === '') return 0;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > max) throw new Error(`${name} must be an integer in 0..${max}`);
  return n;
}

// Spin until this process has used ms of CPU time.
function burnCPU(ms) {
  const start = process.cpuUsage();
  for (;;) {
    for (let i = 0; i < 10000; i++) Math.sqrt(i);
    const d = process.cpuUsage(start);
    if ((d.user + d.system) / 1000 >= ms) return (d.user + d.system) / 1000;
  }
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  try {
    if (req.method === 'GET' && (url.pathname === '/work' || url.pathname === '/render')) {
      // /render is server-side rendering's shape: 10 ms of CPU, a 100 ms
      // wait for data, 40 ms of CPU to render, unless the query says.
      const def = url.pathname === '/render' ? [10, 100, 40] : [0, 0, 0];
      const or = (name, max, d) => (url.searchParams.get(name) ? intParam(url, name, max) : d);
      const cpu = or('cpu_ms', 60000, def[0]), wait = or('wait_ms', 600000, def[1]), then = or('then_cpu_ms', 60000, def[2]);
      const start = Date.now();
      const burned = burnCPU(cpu);
      setTimeout(() => {
        const total = burned + burnCPU(then);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ cpu_ms: Math.round(total), wait_ms: wait, took_ms: Date.now() - start, pid: process.pid }) + '\n');
      }, wait);
    } else if (req.method === 'GET' && url.pathname === '/stream') {
      const chunks = intParam(url, 'chunks', 1000) || 5;
      const interval = url.searchParams.has('interval_ms') ? intParam(url, 'interval_ms', 60000) : 200;
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
      let i = 0;
      const send = () => {
        res.write(`chunk ${i} at ${Date.now()}\n`);
        if (++i < chunks) setTimeout(send, interval); else res.end();
      };
      send();
    } else if (url.pathname === '/echo') {
      const parts = [];
      req.on('data', (c) => parts.push(c));
      req.on('end', () => {
        const body = Buffer.concat(parts).toString();
        const status = Number(url.searchParams.get('status')) || 200;
        const headers = { 'content-type': 'application/json', 'x-echo': 'yes' };
        const cookies = url.searchParams.getAll('cookie');
        if (cookies.length) headers['set-cookie'] = cookies;
        res.writeHead(status, headers);
        res.end(JSON.stringify({ method: req.method, path: url.pathname, query: url.search.slice(1), host: req.headers.host, headers: req.headers, body, body_bytes: Buffer.byteLength(body) }) + '\n');
      });
    } else if (req.method === 'GET' && url.pathname === '/binary') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.end(Buffer.from([...Array(256).keys()]));
    } else if (req.method === 'GET' && (url.pathname === '/healthz' || url.pathname === '/')) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
    }
  } catch (err) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(err.message + '\n');
  }
});
server.keepAliveTimeout = 65000;
server.listen(Number(process.env.PORT || 8080), '127.0.0.1');
