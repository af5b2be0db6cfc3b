// The Socket.IO 4 + redis adapter peer for loadtests/peer.py: the plainest server that does
// what the gateway's push path does for a balance change, so the two are measured alike.
//
//   node server.js PORT REDIS_URL KEY_PREFIX
//
// A client connects with auth {m: member}; the server puts it in the member's room. A publisher
// emits "change" {member, version, ...} with an ack; the server sends "balance_changed" with it to
// the member's room (every node, through Redis pub/sub) and then acks. The process prints
// "ready PORT" once it listens.
"use strict";

const { createServer } = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const [port, redisUrl, prefix] = process.argv.slice(2);

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const http = createServer();
  const io = new Server(http, {
    adapter: createAdapter(pub, sub, { key: prefix }),
    transports: ["websocket"],
    serveClient: false,
  });
  io.on("connection", (socket) => {
    const member = socket.handshake.auth && socket.handshake.auth.m;
    if (member) socket.join(String(member));
    socket.on("change", (payload, ack) => {
      io.to(String(payload.member)).emit("balance_changed", payload);
      if (typeof ack === "function") ack(payload.version);
    });
  });
  http.listen(Number(port), "127.0.0.1", 4096, () => console.log(`ready ${port}`));
  const stop = () => io.close(() => Promise.all([pub.quit(), sub.quit()]).finally(() => process.exit(0)));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
