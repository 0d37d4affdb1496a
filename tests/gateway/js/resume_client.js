// Drives the gateway with the official socket.io-client 4.x: connect, READY, one event,
// disconnect, resume with the last id, RESUMED, the missed event. One JSON object per line
// on stdout; waits for a line on stdin before resuming (the test publishes in between).
const { io } = require("socket.io-client");
const readline = require("readline");

const [url, token] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const input = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => input.once("line", resolve));

function open(auth) {
  return io(url, { path: "/api/v1/ws", transports: ["websocket"], auth, reconnection: false });
}

async function main() {
  let lastId = null;
  const first = open({ token });
  const ready = await new Promise((resolve, reject) => {
    first.on("READY", resolve);
    first.on("connect_error", (err) => reject(err));
  });
  say({ ready: ready.session_id });
  const event = await new Promise((resolve) => first.on("TEST_PROBE", resolve));
  lastId = event.id;
  say({ event: event.data.n, id: event.id });
  first.disconnect();
  say({ disconnected: true });
  await nextLine();
  const second = open({ token, resume: { session_id: ready.session_id, last_event_id: lastId } });
  const received = [];
  second.on("TEST_PROBE", (e) => received.push(e.data.n));
  const resumed = await new Promise((resolve, reject) => {
    second.on("RESUMED", resolve);
    second.on("INVALID_SESSION", () => reject(new Error("not resumed")));
  });
  say({ resumed: resumed.replayed, replayed_events: received });
  second.disconnect();
  process.exit(0);
}

main().catch((err) => { say({ error: String(err && err.message || err) }); process.exit(1); });
