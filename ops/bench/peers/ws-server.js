// Node `ws` broadcast server for ops/bench/peers.sh: WebSocket sessions at /ws; POST /pub sends the
// request body to every open session as a text frame, looping over the clients. The body is one
// Buffer handed to every send: `ws` frames it without copying or re-encoding (a server does not
// mask), so only the 2–10-byte header is built per session. Listens on 127.0.0.1 (PORT, default 0:
// any free port) and prints
//   ready client=127.0.0.1:PORT publish=http://127.0.0.1:PORT/pub
// once listening. Stops on SIGTERM/SIGINT.
'use strict';

const http = require('node:http');
const { WebSocketServer, WebSocket } = require('ws');

// A broadcast body is one small JSON payload; refuse anything larger than pushgate accepts.
const MAX_BODY = 64 * 1024;
// Connections waiting for accept(): as deep as the kernel allows (net.core.somaxconn).
const BACKLOG = 4096;

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/pub') {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) {
      res.writeHead(413).end();
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (size > MAX_BODY) return;
    const body = Buffer.concat(chunks);
    let sent = 0;
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(body, { binary: false });
        sent += 1;
      }
    }
    res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ subscribers: sent }));
  });
});

const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false, maxPayload: 16 * 1024 });

const port = Number(process.env.PORT || 0);
server.listen({ host: '127.0.0.1', port, backlog: BACKLOG }, () => {
  const bound = server.address().port;
  console.log(`ready client=127.0.0.1:${bound} publish=http://127.0.0.1:${bound}/pub`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
