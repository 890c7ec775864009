// The prediction server on loopback: SageMaker's /ping and /invocations, exact error bodies, batching, draining, SIGTERM.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { loadModel, predict, type LoadedModel } from '../lib/evaluate.js';
import { relabel } from '../lib/relabel.js';
import { slots } from '../lib/pool.js';
import { acceptsJson, MAX_TIMER_MS, serveUntilSignal, startServer, type PredictionServer, type ServeLogLine } from '../lib/serve.js';
import { loadTf } from '../lib/tf.js';
import { train } from '../lib/train.js';
import { datasetFiles, makeJpeg, writeTree } from './helpers/fixtures.js';

let tmp: string;
let modelDir: string;
let model: LoadedModel;
let server: PredictionServer;
let jpeg: Buffer;
let png: Buffer;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-serve-'));
  await writeTree(join(tmp, 'src'), await datasetFiles({ perClass: { train: 6, test: 1 } }));
  await relabel({ from: join(tmp, 'src'), out: join(tmp, 'labeled') });
  const r = await train({ data: join(tmp, 'labeled'), out: join(tmp, 'run'), preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { epochs: 1 } });
  modelDir = r.modelDir;
  model = await loadModel(modelDir);
  server = await startServer({ model, host: '127.0.0.1', port: 0 });
  jpeg = await makeJpeg({ seed: 7, pattern: 'stripes' });
  png = await sharp(await makeJpeg({ seed: 8, pattern: 'bright-left' })).png().toBuffer();
});
after(async () => {
  await server?.close();
  model?.dispose();
  await rm(tmp, { recursive: true, force: true });
});

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

/** One request on a fresh connection; the body is sent whole (or in `chunks`, without Content-Length). */
function call(url: string, options: { method?: string; headers?: Record<string, string>; body?: Buffer; chunks?: Buffer[] } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: options.method ?? 'GET', headers: options.headers ?? {}, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text === '' ? undefined : JSON.parse(text) });
      });
      res.on('error', reject);
    });
    // The server may answer (413, 415) and close before the whole body is sent: the answer still counts.
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE' && err.code !== 'ECONNRESET') reject(err);
    });
    if (options.chunks) {
      for (const c of options.chunks) req.write(c);
      req.end();
    } else req.end(options.body);
  });
}

const invoke = (url: string, body: Buffer, type = 'image/jpeg', headers: Record<string, string> = {}): Promise<Reply> =>
  call(`${url}/invocations`, { method: 'POST', headers: { 'content-type': type, ...headers }, body });

/** Writes `text` on a raw connection and resolves with everything the server sends until it closes. */
function rawExchange(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(text));
    let got = '';
    socket.on('data', (c) => (got += c.toString('utf8')));
    socket.on('end', () => resolve(got));
    socket.on('error', reject);
  });
}

const error = (code: string, message: string): unknown => ({ error: { code, message } });

/** A fetch that found nothing listening: undici's TypeError with the connection's ECONNREFUSED as its cause. */
const refused = (err: unknown): boolean =>
  err instanceof TypeError && (err.cause as { code?: unknown } | undefined)?.code === 'ECONNREFUSED';

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000 && !condition(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(condition(), `timed out waiting for ${what}`);
}

test('GET /ping answers 200 and POST /invocations answers the label and the three probabilities in class order', async () => {
  assert.deepEqual(await call(`${server.url}/ping`).then((r) => [r.status, r.body]), [200, { status: 'ok' }]);
  const r = await invoke(server.url, jpeg, 'image/jpeg', { accept: 'application/json' });
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], 'application/json');
  const body = r.body as { label: string; probabilities: Record<string, number> };
  assert.deepEqual(Object.keys(body), ['label', 'probabilities']);
  assert.deepEqual(Object.keys(body.probabilities), ['normal', 'bacteria', 'virus']);
  const [expected] = await predict(model, [{ name: 'x', data: jpeg }]);
  assert.ok(expected && 'label' in expected);
  assert.equal(body.label, expected.label);
  for (const c of ['normal', 'bacteria', 'virus'] as const) assert.ok(Math.abs((body.probabilities[c] ?? -1) - expected.probabilities[c]) < 1e-6);
  // PNG, application/x-image, a Content-Type with parameters and a wildcard Accept are all fine.
  assert.equal((await invoke(server.url, png, 'image/png')).status, 200);
  assert.equal((await invoke(server.url, png, 'application/x-image')).status, 200);
  assert.equal((await invoke(server.url, jpeg, 'Image/JPEG; charset=binary', { accept: 'text/html, */*;q=0.1' })).status, 200);
});

test('bad requests get a 4xx with an exact JSON error, never a 5xx', async () => {
  const u = server.url;
  const notAccepted = 'the request body is not a JPEG, PNG, WebP or TIFF image (by its first bytes): send the image as one of those';
  const gray = sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 128, g: 128, b: 128 } } });
  const gif = await gray.clone().gif().toBuffer();
  // WebP and TIFF, which predict reads too, are answered.
  for (const body of [await gray.clone().webp().toBuffer(), await gray.clone().tiff().toBuffer()]) {
    const r = await invoke(u, body, 'application/x-image');
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  const cases: [Promise<Reply>, number, unknown][] = [
    [call(`${u}/nope?x=1`), 404, error('not_found', 'no such route: GET "/nope" (this server answers GET /ping and POST /invocations)')],
    [call(`${u}/invocations`), 405, error('method_not_allowed', 'GET /invocations is not supported: send the image with POST')],
    [call(`${u}/ping`, { method: 'POST', body: jpeg }), 405, error('method_not_allowed', 'POST /ping is not supported: use GET')],
    [invoke(u, jpeg, 'text/plain'), 415, error('unsupported_media_type', 'content type "text/plain" is not accepted: send the image as image/jpeg, image/png or application/x-image')],
    [call(`${u}/invocations`, { method: 'POST', body: jpeg }), 415, error('unsupported_media_type', 'the request has no content type: send the image as image/jpeg, image/png or application/x-image')],
    [invoke(u, jpeg, 'image/jpeg', { accept: 'text/csv' }), 406, error('not_acceptable', 'Accept "text/csv" does not allow application/json, the only type this server answers with')],
    [invoke(u, Buffer.alloc(0)), 400, error('empty_body', "the request body is empty: send the image's bytes")],
    // Only what predict reads reaches a decoder, whatever the content type says (libvips reads many more formats).
    [invoke(u, Buffer.from('this is not an image\n')), 400, error('invalid_image', notAccepted)],
    [invoke(u, Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'), 'application/x-image'), 400, error('invalid_image', notAccepted)],
    [invoke(u, gif, 'image/png'), 400, error('invalid_image', notAccepted)],
  ];
  for (const [reply, status, body] of cases) {
    const r = await reply;
    assert.deepEqual([r.status, r.body], [status, body]);
  }
  const truncated = await invoke(u, jpeg.subarray(0, Math.floor(jpeg.length / 2)));
  assert.equal(truncated.status, 400);
  assert.equal((truncated.body as { error: { code: string } }).error.code, 'invalid_image');
  assert.match((truncated.body as { error: { message: string } }).error.message, /^"request body" is truncated: the data ends before the image is complete \(/);
  const allowed = await call(`${u}/invocations`, { method: 'DELETE' });
  assert.equal(allowed.headers.allow, 'POST');
  assert.equal(server.stats.serverErrors, 0);
});

test('body size and pixel limits: 413 before the body is read (declared or counted), 413 for too many pixels', async () => {
  const small = await startServer({ model, host: '127.0.0.1', port: 0, maxBodyBytes: 1000, maxInputPixels: 100 });
  try {
    const big = Buffer.alloc(5000, 1);
    assert.deepEqual(await invoke(small.url, big).then((r) => [r.status, r.headers.connection, r.body]), [
      413, 'close', error('payload_too_large', 'the request body is 5000 bytes, more than the limit of 1000 (maxBodyBytes)'),
    ]);
    const chunked = await call(`${small.url}/invocations`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, chunks: [big.subarray(0, 800), big.subarray(800, 1600)] });
    assert.deepEqual([chunked.status, chunked.body], [413, error('payload_too_large', 'the request body is more than the limit of 1000 bytes (maxBodyBytes)')]);
    const tiny = await makeJpeg({ seed: 3 });
    assert.ok(tiny.length < 1000);
    assert.deepEqual(await invoke(small.url, tiny).then((r) => [r.status, r.body]), [
      413, error('image_too_large', '"request body" has 40x48 = 1920 pixels, more than the limit of 100 (maxInputPixels); raise maxInputPixels if the image is trusted'),
    ]);
    assert.equal(small.stats.clientErrors, 3);
  } finally {
    await small.close();
  }
});

test('aborted uploads and malformed HTTP do not crash the server', async () => {
  const abortedBefore = server.stats.aborted;
  await new Promise<void>((resolve) => {
    const req = request(`${server.url}/invocations`, { method: 'POST', agent: false, headers: { 'content-type': 'image/jpeg', 'content-length': '100000' } });
    req.on('error', () => resolve());
    req.write(Buffer.alloc(1000), () => setTimeout(() => req.destroy(), 20));
  });
  await until(() => server.stats.aborted === abortedBefore + 1, 'the aborted upload to be noticed');
  const raw = await rawExchange(server.port, 'NOT HTTP AT ALL\r\n\r\n');
  assert.match(raw, /^HTTP\/1\.1 400 Bad Request\r\n/);
  assert.deepEqual(JSON.parse(raw.split('\r\n\r\n')[1] ?? ''), error('bad_request', 'malformed HTTP request (HPE_INVALID_METHOD)'));
  assert.equal((await invoke(server.url, jpeg)).status, 200);
});

test('a request too slow to arrive gets a 408, and a client gone before its answer counts as aborted, not answered', async () => {
  const lines: ServeLogLine[] = [];
  const slow = await startServer({ model, host: '127.0.0.1', port: 0, requestTimeoutMs: 300, batchWindowMs: 300, onLog: (l) => lines.push(l) });
  try {
    const started = performance.now();
    const raw = await rawExchange(slow.port, 'POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-type: image/jpeg\r\ncontent-length: 100000\r\n\r\nx');
    assert.ok(performance.now() - started < 5000, 'cut within a few checking intervals of the limit, not 30 s later');
    assert.match(raw, /^HTTP\/1\.1 408 Request Timeout\r\n/);
    assert.deepEqual(JSON.parse(raw.split('\r\n\r\n')[1] ?? ''), error('request_timeout', 'the request was not complete within 300 ms (requestTimeoutMs)'));
    await until(() => lines.some((l) => l.event === 'request_timeout'), 'the timeout to be logged');
    assert.equal(slow.stats.aborted, 0);

    // The whole image arrives, then the client hangs up while the image waits for its batch (300 ms).
    await new Promise<void>((resolve) => {
      const req = request(`${slow.url}/invocations`, { method: 'POST', agent: false, headers: { 'content-type': 'image/jpeg' } });
      req.on('error', () => resolve());
      req.end(jpeg, () => setTimeout(() => req.destroy(), 50));
    });
    await until(() => slow.stats.aborted === 1, 'the hang-up to be noticed');
    assert.equal(slow.stats.predictions, 0);
    assert.ok(lines.some((l) => l.event === 'aborted' && l.reason === 'the client went away before the answer'), JSON.stringify(lines));
    assert.ok(!lines.some((l) => l.event === 'request' && l.status === 200));
  } finally {
    await slow.close();
  }
});

test('back-pressure: beyond maxInFlight invocations a request gets 503 busy with Retry-After, /ping still answers', async () => {
  const lines: ServeLogLine[] = [];
  const small = await startServer({ model, host: '127.0.0.1', port: 0, maxInFlight: 1, onLog: (l) => lines.push(l) });
  const socket = connect(small.port, '127.0.0.1');
  try {
    // One invocation whose body is still arriving holds the only place.
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.on('error', () => {});
    socket.write('POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-type: image/jpeg\r\ncontent-length: 100000\r\n\r\nx');
    await until(() => small.stats.inFlight === 1, 'the first invocation to be in flight');
    const refused = await invoke(small.url, jpeg);
    assert.equal(refused.status, 503);
    assert.equal(refused.headers['retry-after'], '1');
    assert.deepEqual(refused.body, error('busy', 'the server is handling 1 invocations already (maxInFlight): retry shortly'));
    assert.equal((await call(`${small.url}/ping`)).status, 200, '/ping is not an invocation');
    socket.destroy();
    await until(() => small.stats.aborted === 1 && small.stats.inFlight === 0, 'the first invocation to end');
    assert.equal((await invoke(small.url, jpeg)).status, 200, 'the place is free again');
    assert.equal(small.stats.busy, 1);
    assert.equal(small.stats.serverErrors, 0, 'back-pressure is not a failure of the server');
    assert.ok(lines.some((l) => l.event === 'request' && l.status === 503 && l.code === 'busy' && l.level === 'warn'), JSON.stringify(lines));
  } finally {
    socket.destroy();
    await small.close();
  }
  await assert.rejects(startServer({ model, port: 0, maxInFlight: 0 }), { message: 'maxInFlight 0 is not valid: expected a whole number of at least 1' });
});

test('slots: at most N calls at once, in order, and a call that throws frees its slot', async () => {
  const two = slots(2);
  let now = 0;
  let most = 0;
  const order: number[] = [];
  const task = (i: number, fail = false) => two(async () => {
    now++;
    most = Math.max(most, now);
    await new Promise((r) => setTimeout(r, 5));
    now--;
    order.push(i);
    if (fail) throw new Error(`task ${i}`);
    return i;
  });
  const results = await Promise.allSettled([task(0), task(1, true), task(2), task(3, true), task(4), task(5)]);
  assert.equal(most, 2);
  assert.deepEqual(results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message)), [0, 'task 1', 2, 'task 3', 4, 5]);
  assert.deepEqual([...order].sort(), [0, 1, 2, 3, 4, 5]);
  assert.equal(await task(6), 6, 'every slot is free again');
  assert.equal(two.limit, 2);
});

test('maxDecoding: images beyond it wait their turn to decode, and every request is answered as alone', async () => {
  const lines: ServeLogLine[] = [];
  const one = await startServer({ model, host: '127.0.0.1', port: 0, maxDecoding: 1, maxBatch: 1, onLog: (l) => lines.push(l) });
  try {
    const images = await Promise.all(Array.from({ length: 6 }, (_, i) => makeJpeg({ seed: 200 + i, pattern: i % 2 ? 'stripes' : 'bright-right' })));
    const alone = [];
    for (const img of images) alone.push(await invoke(one.url, img));
    const together = await Promise.all(images.map((img) => invoke(one.url, img)));
    assert.deepEqual(together.map((r) => r.status), Array(6).fill(200));
    assert.deepEqual(together.map((r) => r.body), alone.map((r) => r.body));
    assert.equal(lines.find((l) => l.event === 'listening')?.maxDecoding, 1);
  } finally {
    await one.close();
  }
  await assert.rejects(startServer({ model, port: 0, maxDecoding: 0 }), { message: 'maxDecoding 0 is not valid: expected a whole number of at least 1' });
});

test('concurrent requests are predicted in one batch, and requests leave no tensors behind', async () => {
  const batched = await startServer({ model, host: '127.0.0.1', port: 0, maxBatch: 8, batchWindowMs: 60_000 });
  try {
    const images = await Promise.all(Array.from({ length: 8 }, (_, i) => makeJpeg({ seed: 100 + i, pattern: i % 2 ? 'stripes' : 'bright-right' })));
    const replies = await Promise.all(images.map((img) => invoke(batched.url, img)));
    assert.deepEqual(replies.map((r) => r.status), Array(8).fill(200));
    assert.equal(batched.stats.batches, 1, 'eight requests, one predict call');
    assert.equal(batched.stats.largestBatch, 8);
    assert.equal(batched.stats.predictions, 8);
    const alone = await predict(model, images.map((data, i) => ({ name: `${i}`, data })));
    replies.forEach((r, i) => {
      const want = alone[i];
      assert.ok(want && 'label' in want);
      assert.equal((r.body as { label: string }).label, want.label);
    });
  } finally {
    await batched.close();
  }
  const tf = loadTf();
  await invoke(server.url, jpeg); // warm-up
  const before = tf.memory().numTensors;
  await Promise.all([jpeg, png, jpeg, png].map((b, i) => invoke(server.url, b, i % 2 ? 'image/png' : 'image/jpeg')));
  await invoke(server.url, Buffer.from('junk'));
  assert.equal(tf.memory().numTensors, before, 'no tensors left behind across requests');
});

test('/ping says 503 until the model is loaded (and when it cannot be), close() drains queued requests and frees the model', async () => {
  const missing = join(tmp, 'nowhere');
  const logged: ServeLogLine[] = [];
  const broken = await startServer({ model: missing, host: '127.0.0.1', port: 0, onLog: (l) => logged.push(l) });
  try {
    const reason = `the model folder "${missing}" does not exist: expected a folder that pneumotype train wrote (pneumotype.json, model.json, weights.bin)`;
    await assert.rejects(broken.ready, { name: 'CacheError', message: reason });
    // The reason names server paths: it goes to the log; a client is told where to look.
    assert.equal(logged.find((l) => l.event === 'model_load_failed')?.message, reason);
    const why = 'the model could not be loaded: see the server log (event model_load_failed)';
    assert.deepEqual(await call(`${broken.url}/ping`).then((r) => [r.status, r.body]), [503, error('not_ready', why)]);
    assert.deepEqual(await invoke(broken.url, jpeg).then((r) => [r.status, r.body]), [503, error('not_ready', why)]);
    // A model that cannot be loaded is a server error; a 503 while one loads (SageMaker polls /ping) is not.
    assert.equal(broken.stats.serverErrors, 2);
  } finally {
    await broken.close();
  }

  const tf = loadTf();
  const tensorsBefore = tf.memory().numTensors;
  const logs: string[] = [];
  const own = await startServer({ model: modelDir, host: '127.0.0.1', port: 0, batchWindowMs: 60_000, maxBatch: 64, onLog: (l) => logs.push(l.event) });
  await own.ready;
  assert.equal((await call(`${own.url}/ping`)).status, 200);
  const pending = [jpeg, png, jpeg].map((b, i) => invoke(own.url, b, i === 1 ? 'image/png' : 'image/jpeg'));
  await until(() => own.stats.queued === 3, 'three queued images');
  await own.close();
  assert.deepEqual((await Promise.all(pending)).map((r) => r.status), [200, 200, 200]);
  assert.equal(own.stats.batches, 1);
  await assert.rejects(call(`${own.url}/ping`), { code: 'ECONNREFUSED' });
  assert.equal(tf.memory().numTensors, tensorsBefore, 'the server disposed the model it loaded');
  assert.deepEqual(logs.filter((e) => e !== 'request'), ['listening', 'model_loaded', 'draining', 'closed']);
});

test('serveUntilSignal: SIGTERM lets requests in flight finish, then the process exits 0', async () => {
  const script = join(tmp, 'serve-child.mts');
  const serveUrl = pathToFileURL(join(import.meta.dirname, '..', 'lib', 'serve.ts')).href;
  await writeFile(script, [
    `import { serveUntilSignal } from ${JSON.stringify(serveUrl)};`,
    'const out = (line: object) => process.stdout.write(`${JSON.stringify(line)}\\n`);',
    'process.exitCode = await serveUntilSignal({',
    "  model: process.argv[2], host: '127.0.0.1', port: 0, batchWindowMs: 60_000, maxBatch: 64, onLog: out,",
    '  onStart: (s) => { let last = -1; const t = setInterval(() => { if (s.stats.queued !== last) { last = s.stats.queued; out({ event: "queued", n: last }); } }, 5); t.unref(); },',
    '});',
    "out({ event: 'exit', code: process.exitCode });",
  ].join('\n'));
  const child = spawn(process.execPath, ['--import', 'tsx', script, modelDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  const events: Record<string, unknown>[] = [];
  let stderr = '';
  let buffered = '';
  child.stdout.on('data', (c: Buffer) => {
    buffered += c.toString('utf8');
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) if (line.trim()) events.push(JSON.parse(line) as Record<string, unknown>);
  });
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    await until(() => events.some((e) => e.event === 'model_loaded') || child.exitCode !== null, `the child server to load its model (${stderr})`);
    assert.equal(child.exitCode, null, `the child exited early: ${stderr}`);
    const port = events.find((e) => e.event === 'listening')?.port as number;
    const url = `http://127.0.0.1:${port}`;
    const pending = [jpeg, jpeg, png].map((b, i) => invoke(url, b, i === 2 ? 'image/png' : 'image/jpeg'));
    await until(() => events.some((e) => e.event === 'queued' && e.n === 3), 'three queued requests in the child');
    child.kill('SIGTERM');
    const replies = await Promise.all(pending);
    assert.deepEqual(replies.map((r) => r.status), [200, 200, 200]);
    assert.ok(replies.every((r) => typeof (r.body as { label?: unknown }).label === 'string'));
    assert.equal(await exited, 0, stderr);
    const names = events.map((e) => e.event).filter((e) => e !== 'queued' && e !== 'request');
    assert.deepEqual(names, ['listening', 'model_loaded', 'signal', 'draining', 'closed', 'exit']);
    assert.equal(events.find((e) => e.event === 'signal')?.signal, 'SIGTERM');
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});

test('serveUntilSignal leaves nothing listening when its onStart or onLog throws', async () => {
  // onStart throws: the error reaches the caller, and the port is closed.
  let started: PredictionServer | undefined;
  await assert.rejects(
    serveUntilSignal({ model, host: '127.0.0.1', port: 0, signals: ['SIGUSR2'], onStart: (s) => {
      started = s;
      throw new Error('onStart broke');
    } }),
    { message: 'onStart broke' },
  );
  const port = started?.port;
  assert.ok(typeof port === 'number');
  await assert.rejects(fetch(`http://127.0.0.1:${port}/ping`), refused, 'nothing listens on the port any more');
  // onLog throws at the signal: the server drains and closes all the same.
  let url = '';
  const done = serveUntilSignal({
    model, host: '127.0.0.1', port: 0, signals: ['SIGUSR2'],
    onStart: (s) => {
      url = s.url;
    },
    onLog: (l) => {
      if (l.event === 'signal') throw new Error('logger broke');
    },
  });
  await until(() => url !== '', 'the server to listen');
  assert.equal((await fetch(`${url}/ping`)).status, 200);
  process.emit('SIGUSR2', 'SIGUSR2');
  assert.equal(await done, 0);
  await assert.rejects(fetch(`${url}/ping`), refused);
  assert.equal(process.listenerCount('SIGUSR2'), 0);
});

test('timer options beyond what a Node timer holds are refused by name', async () => {
  assert.equal(MAX_TIMER_MS, 2147483647);
  await assert.rejects(startServer({ model, port: 0, drainTimeoutMs: 3e9 }), {
    name: 'ConfigError',
    message: 'drainTimeoutMs 3000000000 is not valid: expected at most 2147483647 ms (about 24.8 days), the longest timer Node keeps',
  });
  await assert.rejects(startServer({ model, port: 0, batchWindowMs: NaN }), { message: 'batchWindowMs NaN is not valid: expected a number of at least 0' });
});

test('acceptsJson: the most specific matching range decides, q=0 refuses', () => {
  for (const [accept, ok] of [
    [undefined, true],
    ['', true],
    ['application/json', true],
    ['text/html, */*;q=0.1', true],
    ['application/*', true],
    ['text/csv', false],
    ['application/json;q=0', false],
    ['application/json;q=0, */*', false],
    ['application/*;q=0, application/json', true],
    ['*/*;q=0', false],
  ] as const) {
    assert.equal(acceptsJson(accept), ok, String(accept));
  }
});
