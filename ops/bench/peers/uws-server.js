// uWebSockets.js broadcast server for ops/bench/peers.sh: WebSocket sessions at /ws, each
// subscribed to one topic; POST /pub publishes the request body to that topic (uWS pub/sub), as a
// text frame. Listens on 127.0.0.1 (PORT, default 0: any free port) and prints
//   ready client=127.0.0.1:PORT publish=http://127.0.0.1:PORT/pub
// once listening. Stops on SIGTERM/SIGINT.
'use strict';

const uWS = require('uwebsockets');

const TOPIC = 'all';
// A broadcast body is one small JSON payload; refuse anything larger than pushgate accepts.
const MAX_BODY = 64 * 1024;

const app = uWS.App();

app.ws('/ws', {
  compression: uWS.DISABLED,
  maxPayloadLength: 16 * 1024,
  // Like the other peers (and unlike pushgate's heartbeats), no pings and no idle timeout: the
  // sessions are idle between broadcasts by design.
  idleTimeout: 0,
  sendPingsAutomatically: false,
  maxBackpressure: 1024 * 1024,
  open: (ws) => {
    ws.subscribe(TOPIC);
  },
});

app.post('/pub', (res) => {
  const chunks = [];
  let size = 0;
  let aborted = false;
  res.onAborted(() => {
    aborted = true;
  });
  res.onData((chunk, isLast) => {
    if (aborted) return;
    // The chunk's memory is reused after this call: copy it.
    size += chunk.byteLength;
    if (size > MAX_BODY) {
      aborted = true;
      res.cork(() => res.writeStatus('413 Payload Too Large').end());
      return;
    }
    chunks.push(Buffer.from(chunk.slice(0)));
    if (!isLast) return;
    const body = Buffer.concat(chunks);
    const subscribers = app.numSubscribers(TOPIC);
    app.publish(TOPIC, body, false);
    res.cork(() => {
      res.writeStatus('202 Accepted').writeHeader('content-type', 'application/json').end(
        JSON.stringify({ subscribers }),
      );
    });
  });
});

app.any('/*', (res) => {
  res.writeStatus('404 Not Found').end();
});

const port = Number(process.env.PORT || 0);
let listenSocket = null;
app.listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`uws-server: cannot listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  listenSocket = token;
  const bound = uWS.us_socket_local_port(token);
  console.log(`ready client=127.0.0.1:${bound} publish=http://127.0.0.1:${bound}/pub`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    if (listenSocket) uWS.us_listen_socket_close(listenSocket);
    // Open sessions would keep the loop alive: leave at once.
    process.exit(0);
  });
}
