'use strict';
// Load generator of the wsrooms benchmark: one Node.js process on the npm `ws` client.
//
//   node bench/loadgen.js '<json config>'
//
// It talks to the harness (bench/run.py) through JSON lines: {"mark": NAME} on stdout
// asks the harness to sample both processes' CPU time and RSS, and the harness answers
// with a line on stdin before the load generator goes on; {"result": {...}} ends a run.
// With "noMarks": true in the config it runs alone (for a manual try).
//
// Every loop here is bounded in count and in time, and only 127.0.0.1 is ever dialled.

const net = require('net');
const crypto = require('crypto');
const readline = require('readline');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');

const cfg = JSON.parse(process.argv[2] || '{}');
const HOST = '127.0.0.1'; // never anything else
const PORT = cfg.port;
const SIO = cfg.proto === 'sio';
const now = () => performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const hardTimer = setTimeout(() => {
  emit({ error: `load generator hit its hard deadline (${cfg.hardDeadline}s)` });
  process.exit(3);
}, (cfg.hardDeadline || 120) * 1000);
hardTimer.unref();

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// --- harness handshake -------------------------------------------------------------------

const waiters = [];
if (!cfg.noMarks) {
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    const waiter = waiters.shift();
    if (waiter) waiter(line);
  });
}

function mark(name, extra) {
  emit({ mark: name, t: now(), ...(extra || {}) });
  if (cfg.noMarks) return Promise.resolve();
  return new Promise((resolve) => waiters.push(resolve));
}

// --- payloads --------------------------------------------------------------------------

const PAD = 'x'.repeat(1 << 16);

// "seq|send-time-ms|xxxx..." padded to `size` bytes (ASCII, so bytes == characters).
function payload(seq, size) {
  const head = `${seq}|${now().toFixed(3)}|`;
  return head + PAD.slice(0, Math.max(0, size - head.length));
}

function warmPayload(size) {
  const head = `w|${now().toFixed(3)}|`;
  return head + PAD.slice(0, Math.max(0, size - head.length));
}

// The sequence number at buf[off...] up to '|', or -1 (a warm-up message).
function parseSeq(buf, off) {
  let n = 0;
  for (let i = off; i < buf.length; i++) {
    const c = buf[i];
    if (c === 124) return n;
    if (c < 48 || c > 57) return -1;
    n = n * 10 + (c - 48);
  }
  return -1;
}

// --- clients -------------------------------------------------------------------------

const WS_OPTIONS = {
  perMessageDeflate: false, // no compression anywhere in this bench
  skipUTF8Validation: true,
  maxPayload: 64 * 1024 * 1024,
  handshakeTimeout: 10000,
};

function pathFor(role, room) {
  if (SIO) return `/socket.io/?EIO=4&transport=websocket&role=${role}&room=${room}`;
  if (role === 'echo') return '/echo';
  return `/${role}/${room}`;
}

// Socket.IO over a raw Engine.IO v4 WebSocket transport: "0{...}" open, "40" connect to
// the default namespace, "42[event,data]" events, "2" ping answered with "3".
const SIO_EVENT = { pub: 'm', sub: 'm', echo: 'e' };
const SIO_PREFIX_LEN = 8; // 42["m","  (event names are one character long)

// Opens one client. Resolves to {send, close, closed} once the server has taken the
// client in (WebSocket open; for Socket.IO, the namespace connect answered).
// onPayload(buf, offset) gets every application message.
function openClient(role, room, onPayload) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${HOST}:${PORT}${pathFor(role, room)}`, WS_OPTIONS);
    let ready = false;
    let closeResolve;
    const closed = new Promise((r) => (closeResolve = r));
    const event = SIO_EVENT[role];
    const client = {
      ws,
      closed,
      send: SIO ? (text) => ws.send(`42["${event}","${text}"]`) : (text) => ws.send(text),
      close(code) {
        if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) {
          ws.close(code || 1000);
        }
        return closed;
      },
      terminate() {
        ws.terminate();
        return closed;
      },
    };
    const timer = setTimeout(() => {
      if (!ready) {
        ws.terminate();
        reject(new Error('client not ready after 15 s'));
      }
    }, 15000);
    ws.on('error', (err) => {
      if (!ready) {
        clearTimeout(timer);
        reject(err);
      }
    });
    ws.on('close', (code) => {
      clearTimeout(timer);
      client.closeCode = code;
      closeResolve(code);
      if (!ready) reject(new Error(`closed (${code}) before ready`));
    });
    if (SIO) {
      ws.on('message', (data) => {
        const c0 = data[0];
        if (c0 === 52 /* 4 */) {
          const c1 = data[1];
          if (c1 === 50 /* 2 */) {
            if (onPayload) onPayload(data, SIO_PREFIX_LEN);
          } else if (c1 === 48 /* 0 */ && !ready) {
            ready = true;
            clearTimeout(timer);
            resolve(client);
          } else if (c1 === 52 /* 4: connect error */ && !ready) {
            ws.terminate();
          }
        } else if (c0 === 48 /* 0: open */) {
          ws.send('40');
        } else if (c0 === 50 /* 2: ping */) {
          ws.send('3');
        }
      });
    } else {
      ws.on('open', () => {
        ready = true;
        clearTimeout(timer);
        resolve(client);
      });
      if (onPayload) ws.on('message', (data) => onPayload(data, 0));
    }
  });
}

// A lean WebSocket client on a raw TCP socket, for the members of a room and the echo
// clients: the server's frames are parsed straight out of one shared read buffer
// (net.Socket `onread`), with no stream, no per-read allocation and no event per frame,
// so that the client costs far less per delivery than any server under test (the
// README shows the figures). It does the handshake itself (and the Socket.IO connect),
// masks what it sends, answers Engine.IO pings, and can stop reading (pause) to play the
// stuck member of the slow-consumer scenario; after resume() it parses what was left in
// the kernel to learn what the server did with it.
const SHARED_READ = Buffer.allocUnsafe(1 << 18);

function maskedFrame(opcode, text) {
  const body = Buffer.from(text);
  const len = body.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, 0x80 | len]) : Buffer.alloc(4);
  if (len >= 126) {
    if (len > 0xffff) throw new Error('frame too large for this client');
    head[0] = 0x80 | opcode;
    head[1] = 0x80 | 126;
    head.writeUInt16BE(len, 2);
  }
  const mask = crypto.randomBytes(4);
  for (let i = 0; i < len; i++) body[i] ^= mask[i & 3];
  return Buffer.concat([head, mask, body]);
}

function openRawClient(role, room, onPayload) {
  return new Promise((resolve, reject) => {
    const key = crypto.randomBytes(16).toString('base64');
    const state = {
      handshaken: false,
      ready: false,
      paused: false,
      framesAfterPause: 0,
      bytesAfterPause: 0,
      closeCode: null,
      closeReason: null,
      ended: false,
      error: null,
      pings: 0,
    };
    let pending = null; // bytes of an incomplete frame (or handshake) kept between reads
    let endResolve;
    state.endedPromise = new Promise((r) => (endResolve = r));
    const event = SIO_EVENT[role];
    const timer = setTimeout(() => {
      if (!state.ready) {
        sock.destroy();
        reject(new Error('client not ready after 15 s'));
      }
    }, 15000);
    const markReady = () => {
      state.ready = true;
      clearTimeout(timer);
      resolve(client);
    };
    // Returns false once the socket's user-space buffer is past its high-water mark (the
    // kernel did not take everything): the sender then waits for 'drain' (backpressure).
    const sendRaw = (opcode, text) => {
      if (sock.destroyed) return false;
      return sock.write(maskedFrame(opcode, text));
    };
    const onFrame = (opcode, buf, start, end) => {
      if (opcode === 8) {
        state.closeCode = end - start >= 2 ? buf.readUInt16BE(start) : 1005;
        state.closeReason = end - start > 2 ? buf.toString('utf8', start + 2, end) : '';
        return;
      }
      if (opcode === 9) {
        state.pings++;
        return;
      }
      if (opcode !== 1 && opcode !== 2) return;
      if (state.paused) {
        state.framesAfterPause++;
        state.bytesAfterPause += end - start;
      }
      if (SIO) {
        const c0 = buf[start];
        if (c0 === 52 /* 4 */) {
          const c1 = buf[start + 1];
          if (c1 === 50 /* 2: event */) {
            if (onPayload) onPayload(buf, start + SIO_PREFIX_LEN);
          } else if (c1 === 48 /* 0: connected */ && !state.ready) {
            markReady();
          }
        } else if (c0 === 48 /* 0: open */) {
          sendRaw(1, '40');
        } else if (c0 === 50 /* 2: ping */) {
          if (!state.paused) sendRaw(1, '3');
        }
      } else if (onPayload) {
        onPayload(buf, start);
      }
    };
    // Parses every whole frame of buf[0, n); returns the offset of the first byte of an
    // incomplete frame (n when there is none).
    const parse = (buf, n) => {
      let pos = 0;
      for (;;) {
        if (n - pos < 2) return pos;
        const opcode = buf[pos] & 0x0f;
        let len = buf[pos + 1] & 0x7f;
        let off = pos + 2;
        if (len === 126) {
          if (n - pos < 4) return pos;
          len = buf.readUInt16BE(pos + 2);
          off = pos + 4;
        } else if (len === 127) {
          if (n - pos < 10) return pos;
          len = Number(buf.readBigUInt64BE(pos + 2));
          off = pos + 10;
        }
        if (off + len > n) return pos;
        onFrame(opcode, buf, off, off + len);
        pos = off + len;
      }
    };
    const feed = (nread, buf) => {
      let data = buf;
      let n = nread;
      if (pending !== null) {
        data = Buffer.concat([pending, buf.subarray(0, nread)]);
        n = data.length;
        pending = null;
      }
      let pos = 0;
      if (!state.handshaken) {
        const end = data.indexOf('\r\n\r\n');
        if (end < 0 || end >= n) {
          pending = Buffer.from(data.subarray(0, n));
          return;
        }
        const head = data.toString('latin1', 0, end);
        if (!head.startsWith('HTTP/1.1 101')) {
          sock.destroy();
          reject(new Error(`handshake refused: ${head.split('\r\n')[0]}`));
          return;
        }
        state.handshaken = true;
        pos = end + 4;
        if (!SIO) markReady();
      }
      if (pos > 0) {
        data = data.subarray(pos, n);
        n -= pos;
      }
      const rest = parse(data, n);
      if (rest < n) pending = Buffer.from(data.subarray(rest, n)); // copy out of the shared buffer
    };
    const sock = net.connect({
      host: HOST,
      port: PORT,
      onread: { buffer: SHARED_READ, callback: feed },
    });
    sock.setNoDelay(true);
    sock.on('error', (err) => {
      state.error = err.code || String(err);
      if (!state.ready) {
        clearTimeout(timer);
        reject(err);
      }
    });
    sock.on('close', () => {
      state.ended = true;
      clearTimeout(timer);
      endResolve();
      if (!state.ready) reject(new Error('closed before ready'));
    });
    sock.on('connect', () => {
      sock.write(
        `GET ${pathFor(role, room)} HTTP/1.1\r\nHost: ${HOST}:${PORT}\r\n` +
          `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
          'Sec-WebSocket-Version: 13\r\n\r\n',
      );
    });
    const client = {
      state,
      closed: state.endedPromise,
      send: SIO ? (text) => sendRaw(1, `42["${event}","${text}"]`) : (text) => sendRaw(1, text),
      pause() {
        state.paused = true;
        sock.pause();
      },
      resume() {
        sock.resume();
      },
      // Sends a close frame and waits for the server to close the TCP connection.
      close(code) {
        if (!sock.destroyed && !state.ended) {
          const body = Buffer.alloc(2);
          body.writeUInt16BE(code || 1000);
          const mask = crypto.randomBytes(4);
          for (let i = 0; i < 2; i++) body[i] ^= mask[i & 3];
          sock.write(Buffer.concat([Buffer.from([0x88, 0x82]), mask, body]));
        }
        return state.endedPromise;
      },
      terminate() {
        sock.destroy();
        return state.endedPromise;
      },
      isOpen() {
        return !state.ended;
      },
      // Resolves once the socket's buffered writes have gone to the kernel (or it closed).
      drain() {
        if (sock.destroyed || sock.writableLength === 0) return Promise.resolve();
        return new Promise((resolve) => {
          const done = () => {
            sock.off('drain', done);
            sock.off('close', done);
            resolve();
          };
          sock.on('drain', done);
          sock.on('close', done);
        });
      },
      destroy() {
        sock.destroy();
      },
    };
  });
}

// Runs fn(i) for i in [0, n) with at most `concurrency` at once; stops early on stop().
async function pool(n, concurrency, fn, shouldStop) {
  let next = 0;
  const worker = async () => {
    while (next < n && !(shouldStop && shouldStop())) {
      const i = next++;
      await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}

function percentiles(samples, count) {
  if (count === 0) return { p50: null, p99: null, max: null };
  const sorted = samples.subarray(0, count).sort();
  const at = (q) => sorted[Math.min(count - 1, Math.floor(q * count))];
  return { p50: at(0.5), p99: at(0.99), max: sorted[count - 1] };
}

async function closeAll(clients, ms) {
  await Promise.race([
    Promise.all(clients.map((c) => c.close(1000).catch(() => {}))),
    sleep(ms),
  ]);
  for (const c of clients) c.terminate();
}

// --- fan-out (and slow consumer) -------------------------------------------------------

async function fanout() {
  const N = cfg.subscribers;
  const M = cfg.messages;
  const W = cfg.window;
  const size = cfg.size;
  const exclude = cfg.exclude || 0; // the first `exclude` members are left out of the figures
  const stuck = !!cfg.stuck; // ... and, if set, they stop reading
  const measured = N - exclude;
  const room = 'bench';

  const sendTime = new Float64Array(M);
  const recvCount = new Uint32Array(M);
  const latCap = Math.min(M * measured, 4_000_000);
  const lat = new Float64Array(latCap);
  let latN = 0;
  let sent = 0;
  let completed = 0;
  let deliveries = 0;
  let lastRecv = 0;
  let stopped = false;
  let gaps = 0;
  let orderViolations = 0;
  let warmSeen = 0;
  let wake = null;

  const members = [];
  const subs = [];
  const stuckClients = [];
  let pump = () => {};

  const makeHandler = (index) => {
    const m = { index, next: 0, received: 0, warm: false };
    members.push(m);
    const counted = index >= exclude;
    return (buf, off) => {
      const seq = parseSeq(buf, off);
      if (seq < 0) {
        if (!m.warm) {
          m.warm = true;
          warmSeen++;
        }
        return;
      }
      if (!counted) return;
      const t = now();
      if (seq !== m.next) {
        if (seq > m.next) gaps += seq - m.next;
        else orderViolations++;
      }
      if (seq >= m.next) m.next = seq + 1;
      m.received++;
      deliveries++;
      lastRecv = t;
      if (latN < latCap) lat[latN++] = t - sendTime[seq];
      if (++recvCount[seq] === measured) {
        completed++;
        pump();
      }
    };
  };

  const openedAt = now();
  await pool(N, 100, async (i) => {
    if (stuck && i < exclude) {
      stuckClients.push(await openRawClient('sub', room, makeHandler(i)));
    } else {
      // --member-client ws: the npm `ws` client instead (to compare the generator's cost)
      const open = cfg.memberClient === 'ws' ? openClient : openRawClient;
      subs.push(await open('sub', room, makeHandler(i)));
    }
  });
  const pub = await openClient('pub', room, null);
  const openSeconds = (now() - openedAt) / 1000;

  // Warm-up: publish until every member (the stuck one too) has seen a message, so that
  // every join has landed before the measured run.
  const warmDeadline = now() + 15000;
  while (warmSeen < N && now() < warmDeadline) {
    pub.send(warmPayload(size));
    await sleep(20);
  }
  if (warmSeen < N) throw new Error(`only ${warmSeen} of ${N} subscribers got the warm-up`);
  await sleep(cfg.warmSettleMs || 300); // trailing warm-up messages
  for (const s of stuckClients) s.pause();

  await mark('start');
  const t0 = now();
  const deadline = t0 + cfg.duration * 1000;
  let finished = new Promise((resolve) => (wake = resolve));
  pump = () => {
    while (!stopped && sent < M && sent - completed < W) {
      sendTime[sent] = now();
      pub.send(payload(sent, size));
      sent++;
    }
    if (completed === (stopped ? sent : M)) wake();
  };
  let timer = setTimeout(() => wake(), Math.max(0, deadline - now()));
  pump();
  await finished;
  stopped = true;
  clearTimeout(timer);
  const tStop = now();
  const timedOut = completed < M;
  const deliveriesAtStop = deliveries;
  if (completed < sent) {
    // The deadline struck: let the last window arrive (bounded), so that only what is
    // really lost or stuck counts as undelivered.
    finished = new Promise((resolve) => (wake = resolve));
    timer = setTimeout(() => wake(), cfg.drainMs || 5000);
    await finished;
    clearTimeout(timer);
  }
  const elapsed = ((timedOut ? tStop : lastRecv) - t0) / 1000;
  await mark('end');

  let undelivered = 0;
  for (const m of members) if (m.index >= exclude) undelivered += Math.max(0, sent - m.next);

  const stuckReport = [];
  for (const s of stuckClients) {
    s.resume();
    await Promise.race([s.state.endedPromise, sleep(cfg.stuckDrainMs || 3000)]);
    const st = s.state;
    let fate;
    if (st.closeCode !== null) fate = `closed by server with ${st.closeCode}`;
    else if (st.ended) fate = st.error ? `connection reset (${st.error})` : 'TCP closed, no close frame';
    else fate = 'still open';
    stuckReport.push({
      fate,
      close_code: st.closeCode,
      close_reason: st.closeReason,
      frames_after_pause: st.framesAfterPause,
      bytes_after_pause: st.bytesAfterPause,
      messages_sent_while_stuck: sent,
      pings: st.pings,
    });
    s.destroy();
  }

  const pct = percentiles(lat, latN);
  await closeAll(subs.concat([pub]), 3000);
  return {
    subscribers: N,
    measured_subscribers: measured,
    window: W,
    size,
    messages_sent: sent,
    messages_completed: completed,
    deliveries,
    expected_deliveries: sent * measured,
    elapsed_s: elapsed,
    deliveries_per_s: (timedOut ? deliveriesAtStop : deliveries) / elapsed,
    latency_ms: pct,
    gaps,
    order_violations: orderViolations,
    undelivered,
    timed_out: timedOut,
    open_s: openSeconds,
    stuck: stuckReport,
  };
}

// --- idle memory ---------------------------------------------------------------------

async function idle() {
  const C = cfg.connections;
  const R = cfg.rooms;
  const size = cfg.size || 100;
  let failed = 0;
  let delivered = 0;
  const received = new Uint8Array(C);

  // Warm the server's code paths, then open the publishers (one per room) before the
  // baseline sample so that they are not counted.
  const warm = [];
  await pool(50, 50, async (i) => {
    try {
      warm.push(await openRawClient('sub', `room${i % R}`, null));
    } catch (err) {
      failed++;
    }
  });
  await closeAll(warm, 3000);
  const pubs = [];
  for (let r = 0; r < R; r++) pubs.push(await openClient('pub', `room${r}`, null));
  await sleep(cfg.pauseMs || 500);
  await mark('before');

  const subs = [];
  const t0 = now();
  await pool(C, cfg.openConcurrency || 100, async (i) => {
    try {
      subs.push(
        await openRawClient('sub', `room${i % R}`, () => {
          if (!received[i]) {
            received[i] = 1;
            delivered++;
          }
        }),
      );
    } catch (err) {
      failed++;
    }
  }, () => now() - t0 > cfg.duration * 1000);
  const openSeconds = (now() - t0) / 1000;
  await sleep(cfg.settleMs || 1500);
  await mark('idle', { opened: subs.length });

  // Every member must get one message: proves they all joined their room.
  for (let r = 0; r < R; r++) pubs[r].send(payload(r, size));
  const until = now() + 15000;
  while (delivered < subs.length && now() < until) await sleep(20);
  await mark('after_message');
  await closeAll(subs.concat(pubs), 5000);
  return {
    connections: C,
    rooms: R,
    opened: subs.length,
    failed,
    delivered,
    open_s: openSeconds,
    connections_per_s_open: subs.length / openSeconds,
  };
}

// --- echo ----------------------------------------------------------------------------

async function echo() {
  const K = cfg.clients;
  const size = cfg.size || 100;
  const maxPerClient = cfg.maxPerClient || 1_000_000;
  const latCap = 4_000_000;
  const lat = new Float64Array(latCap);
  let latN = 0;
  let roundTrips = 0;
  let mismatches = 0;
  let measuring = false;
  let stop = false;

  const clients = [];
  await pool(K, 50, async () => {
    const c = { expect: -1, sentAt: 0, count: 0, done: null };
    const client = await openRawClient('echo', 'echo', (buf, off) => {
      const seq = parseSeq(buf, off);
      const t = now();
      if (seq !== c.expect) mismatches++;
      if (measuring) {
        roundTrips++;
        if (latN < latCap) lat[latN++] = t - c.sentAt;
      }
      c.count++;
      const resolve = c.done;
      c.done = null;
      if (resolve) resolve();
    });
    c.client = client;
    clients.push(c);
  });

  const roundTrip = (c) =>
    new Promise((resolve) => {
      c.done = resolve;
      c.expect = c.count;
      c.sentAt = now();
      c.client.send(payload(c.count, size));
    });
  const loop = async (c, n, until) => {
    for (let i = 0; i < n && !stop && now() < until; i++) {
      await Promise.race([roundTrip(c), sleep(5000)]);
    }
  };

  await Promise.all(clients.map((c) => loop(c, cfg.warmRoundTrips || 20, now() + 5000))); // warm-up
  await mark('start');
  measuring = true;
  const t0 = now();
  const until = t0 + cfg.duration * 1000;
  await Promise.all(clients.map((c) => loop(c, maxPerClient, until)));
  const elapsed = (now() - t0) / 1000;
  measuring = false;
  await mark('end');
  const pct = percentiles(lat, latN);
  await closeAll(clients.map((c) => c.client), 3000);
  return {
    clients: K,
    round_trips: roundTrips,
    elapsed_s: elapsed,
    round_trips_per_s: roundTrips / elapsed,
    latency_ms: pct,
    mismatches,
  };
}

// --- connect/disconnect churn --------------------------------------------------------

async function churn() {
  const total = cfg.cycles;
  const warmCycles = cfg.warmCycles;
  const R = cfg.rooms || 10;
  let ok = 0;
  let failed = 0;
  const closeCodes = {};

  const cycle = async (i) => {
    try {
      const c = await openClient('sub', `room${i % R}`, null);
      const code = await Promise.race([c.close(1000), sleep(5000).then(() => null)]);
      if (code === null) {
        c.terminate();
        failed++;
        return;
      }
      closeCodes[code] = (closeCodes[code] || 0) + 1;
      ok++;
    } catch (err) {
      failed++;
    }
  };

  const deadline = now() + cfg.duration * 1000;
  const stop = () => now() > deadline;
  await pool(warmCycles, cfg.concurrency, (i) => cycle(i), stop);
  await sleep(cfg.pauseMs || 500);
  await mark('warm', { cycles: ok + failed });
  const t0 = now();
  const before = ok + failed;
  await pool(total - warmCycles, cfg.concurrency, (i) => cycle(warmCycles + i), stop);
  const elapsed = (now() - t0) / 1000;
  const measuredCycles = ok + failed - before;
  await sleep(cfg.settleMs || 1000);
  await mark('end');
  return {
    cycles: ok + failed,
    ok,
    failed,
    warm_cycles: before,
    measured_cycles: measuredCycles,
    elapsed_s: elapsed,
    connections_per_s: measuredCycles / elapsed,
    close_codes: closeCodes,
    timed_out: ok + failed < total,
  };
}


// --- flood -------------------------------------------------------------------------------

// One client sends as fast as its socket takes data into a room of R readers that read
// everything, for `duration` seconds or `messages` messages, whichever comes first. The
// publisher honours TCP backpressure (it waits for 'drain' when its socket's buffer is
// full), so a server that slows a flood at its source makes the publisher wait; one that
// buffers lets it run ahead. Reported: the readers' deliveries/s from the first send to
// the last receipt (everything sent has to arrive, within a bounded drain), how many
// readers the server closed (and with which codes), the backlog still to deliver when the
// flood stopped, and what was still missing after the drain.
async function flood() {
  const R = cfg.readers;
  const M = cfg.messages;
  const size = cfg.size || 100;
  const batch = cfg.batch || 32; // messages written between two turns of the event loop
  const room = 'flood';
  const sendTime = new Float64Array(M);
  const latCap = Math.min(M * R, 4_000_000);
  const lat = new Float64Array(latCap);
  let latN = 0;
  let deliveries = 0;
  let gaps = 0;
  let orderViolations = 0;
  let warmSeen = 0;
  let measuring = false;
  let lastRecv = 0;

  const readers = [];
  const makeHandler = (m) => (buf, off) => {
    const seq = parseSeq(buf, off);
    if (seq < 0) {
      if (!m.warm) {
        m.warm = true;
        warmSeen++;
      }
      return;
    }
    const t = now();
    if (seq !== m.next) {
      if (seq > m.next) gaps += seq - m.next;
      else orderViolations++;
    }
    if (seq >= m.next) m.next = seq + 1;
    m.received++;
    deliveries++;
    lastRecv = t;
    if (measuring && latN < latCap) lat[latN++] = t - sendTime[seq];
  };
  await pool(R, 50, async () => {
    const m = { next: 0, received: 0, warm: false, client: null };
    m.client = await openRawClient('sub', room, makeHandler(m));
    readers.push(m);
  });
  const pub = await openRawClient('pub', room, null);

  const warmDeadline = now() + 15000;
  while (warmSeen < R && now() < warmDeadline) {
    pub.send(warmPayload(size));
    await sleep(20);
  }
  if (warmSeen < R) throw new Error(`only ${warmSeen} of ${R} readers got the warm-up`);
  await sleep(cfg.warmSettleMs || 300);

  await mark('start');
  measuring = true;
  const t0 = now();
  const deadline = t0 + cfg.duration * 1000;
  let sent = 0;
  let drainWaits = 0;
  while (sent < M && now() < deadline && pub.isOpen()) {
    let taken = true;
    for (let b = 0; b < batch && sent < M; b++) {
      sendTime[sent] = now();
      taken = pub.send(payload(sent, size));
      sent++;
      if (!taken) break;
    }
    if (taken) {
      await new Promise(setImmediate); // let the readers' reads run
    } else {
      drainWaits++;
      let timer;
      await Promise.race([
        pub.drain(),
        new Promise((r) => (timer = setTimeout(r, Math.max(0, deadline - now())))),
      ]);
      clearTimeout(timer);
    }
  }
  const tStop = now();
  const deliveriesAtStop = deliveries;
  const receivedAtStop = readers.map((m) => m.received);

  // Bounded drain: what is still on its way (in the server or the kernel) arrives, or not.
  const isDropped = (m) => m.client.state.ended || m.client.state.closeCode !== null;
  const drainUntil = now() + (cfg.drainMs || 5000);
  while (now() < drainUntil && readers.some((m) => !isDropped(m) && m.next < sent)) {
    await sleep(5);
  }
  const drainedAll = !readers.some((m) => !isDropped(m) && m.next < sent);
  const tEnd = drainedAll ? Math.max(lastRecv, tStop) : now();
  await mark('end');
  const dropped = readers.filter(isDropped);
  const closeCodes = {};
  for (const m of dropped) {
    const code = m.client.state.closeCode === null ? 'no close frame' : m.client.state.closeCode;
    closeCodes[code] = (closeCodes[code] || 0) + 1;
  }
  let undelivered = 0;
  let backlog = 0;
  readers.forEach((m, i) => {
    if (isDropped(m)) return;
    undelivered += Math.max(0, sent - m.next);
    backlog += Math.max(0, sent - receivedAtStop[i]);
  });
  const live = readers.filter((m) => !isDropped(m)).length;
  const minShare = receivedAtStop.length
    ? Math.min(...receivedAtStop) / Math.max(1, Math.max(...receivedAtStop))
    : null;
  const sending = (tStop - t0) / 1000;
  const elapsed = (tEnd - t0) / 1000;
  const pct = percentiles(lat, latN);
  const publisherClosed = !pub.isOpen() || pub.state.closeCode !== null;
  const result = {
    readers: R,
    size,
    messages_sent: sent,
    sending_s: sending,
    messages_per_s: sent / sending,
    deliveries,
    deliveries_at_stop: deliveriesAtStop,
    elapsed_s: elapsed,
    drained_all: drainedAll,
    deliveries_per_s: deliveries / elapsed,
    readers_dropped: dropped.length,
    close_codes: closeCodes,
    publisher_closed: publisherClosed,
    publisher_close_code: pub.state.closeCode,
    drain_waits: drainWaits,
    backlog_at_stop: backlog,
    backlog_per_reader_at_stop: live ? backlog / live : null,
    undelivered_after_drain: undelivered,
    drain_s: (tEnd - tStop) / 1000,
    min_reader_share: minShare,
    latency_ms: pct,
    gaps,
    order_violations: orderViolations,
  };
  await closeAll(readers.map((m) => m.client).concat([pub]), 3000);
  return result;
}

// ---------------------------------------------------------------------------------------

const SCENARIOS = { fanout, slow: fanout, idle, echo, churn, flood };

(async () => {
  const run = SCENARIOS[cfg.scenario];
  if (!run) throw new Error(`unknown scenario ${cfg.scenario}`);
  const result = await run();
  emit({ result });
  process.exit(0);
})().catch((err) => {
  emit({ error: String((err && err.stack) || err) });
  process.exit(1);
});
