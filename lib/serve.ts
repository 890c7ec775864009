// The prediction server: SageMaker's hosting contract (GET /ping, POST /invocations) on node:http, with request batching.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { CLASSES, DEFAULTS, type Label } from './config.js';
import { ConfigError, ImageError, MAX_TIMER_MS, messageOf, quote } from './errors.js';
import { loadModel, predictPixels, type LoadedModel } from './evaluate.js';
import { decodeGray } from './images.js';
import { argmax } from './metrics.js';
import { slots } from './pool.js';

/** Defaults of the server, from the config module (SageMaker expects port 8080 on every interface). */
export const SERVE_DEFAULTS = {
  port: DEFAULTS.servePort,
  host: DEFAULTS.serveHost,
  maxBodyBytes: DEFAULTS.serveMaxBodyBytes,
  maxBatch: DEFAULTS.serveMaxBatch,
  maxInFlight: DEFAULTS.serveMaxInFlight,
  maxDecoding: DEFAULTS.serveMaxDecoding,
  batchWindowMs: DEFAULTS.serveBatchWindowMs,
  drainTimeoutMs: DEFAULTS.serveDrainTimeoutMs,
  requestTimeoutMs: DEFAULTS.serveRequestTimeoutMs,
} as const;

/** The body types accepted by POST /invocations (application/x-image as SageMaker's built-in image algorithms use it). */
export const ACCEPTED_CONTENT_TYPES = ['image/jpeg', 'image/png', 'application/x-image'] as const;

/** One log line: JSON-ready, one per event (the CLI prints them as JSON lines). */
export interface ServeLogLine {
  readonly time: string;
  readonly level: 'info' | 'warn' | 'error';
  readonly event: string;
  readonly [field: string]: unknown;
}

export interface ServeOptions {
  /** A model folder (loaded after the server listens: /ping says 503 until then), a loaded model (the caller disposes
   * it), or nothing for the shipped model. */
  readonly model?: string | LoadedModel | undefined;
  readonly port?: number;
  readonly host?: string;
  readonly maxBodyBytes?: number;
  /** Decompression-bomb guard per image (DEFAULTS.maxInputPixels). */
  readonly maxInputPixels?: number;
  readonly maxBatch?: number;
  /** Invocations handled at once (reading, decoding, waiting for their batch); one more gets 503 `busy` with
   * Retry-After: 1 before its body is read, so memory stays bounded under a flood (SERVE_DEFAULTS.maxInFlight). */
  readonly maxInFlight?: number;
  /** Images decoded at once (SERVE_DEFAULTS.maxDecoding); the others wait with their body read. A decode holds the
   * whole image's pixels (16-bit images at two bytes each), so this bounds memory where maxInFlight bounds bodies. */
  readonly maxDecoding?: number;
  readonly batchWindowMs?: number;
  readonly drainTimeoutMs?: number;
  readonly requestTimeoutMs?: number;
  readonly onLog?: (line: ServeLogLine) => void;
}

/** Counters of a running server, updated live. */
export interface ServeStats {
  /** HTTP requests received (every path). */
  requests: number;
  /** Invocations answered with a prediction. */
  predictions: number;
  /** Predict calls made: fewer than `predictions` when requests were batched. */
  batches: number;
  /** The largest batch so far. */
  largestBatch: number;
  /** Answers with a 4xx status. */
  clientErrors: number;
  /** Answers with a 5xx status, but for the 503 while the model loads or the server drains (the contract, not a failure)
   * and the 503 of a server at maxInFlight (counted in `busy`). */
  serverErrors: number;
  /** Invocations refused with 503 `busy` because maxInFlight were being handled already (back-pressure). */
  busy: number;
  /** Requests whose client went away before the answer. */
  aborted: number;
  /** Requests being handled now. */
  inFlight: number;
  /** Decoded images waiting for the next batch. */
  queued: number;
}

/** A running server. */
export interface PredictionServer {
  /** `http://HOST:PORT` (127.0.0.1 when listening on every interface). */
  readonly url: string;
  readonly port: number;
  /** Resolves when the model is loaded and /ping answers 200; rejects when it cannot be loaded. */
  readonly ready: Promise<void>;
  readonly stats: Readonly<ServeStats>;
  /** Stops accepting connections, finishes the requests in flight (queued images are predicted at once), then
   * releases the model when the server loaded it. `force` cuts every connection at once instead. */
  close(options?: { force?: boolean }): Promise<void>;
}

/** The answer to a successful invocation. */
export interface Invocation {
  readonly label: Label;
  readonly probabilities: Readonly<Record<Label, number>>;
}

/** A request refused with a 4xx (or 503) and a JSON error body. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }
}

/** The media type of a Content-Type header, lower case, without parameters. */
function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
}

/**
 * True when an Accept header allows application/json (absent means anything).
 *
 * @example acceptsJson('text/html, application/json;q=0.9') // true; acceptsJson('text/csv') // false
 */
export function acceptsJson(accept: string | undefined): boolean {
  if (accept === undefined || accept.trim() === '') return true;
  // The most specific range that matches decides (RFC 9110): `application/json;q=0, */*` refuses JSON.
  const quality = new Map<string, number>();
  for (const part of accept.split(',')) {
    const [range = '', ...params] = part.split(';').map((s) => s.trim().toLowerCase());
    const q = params.find((p) => p.startsWith('q='));
    const value = q === undefined ? 1 : Number(q.slice(2));
    quality.set(range, Math.max(quality.get(range) ?? 0, Number.isFinite(value) ? value : 0));
  }
  const decisive = ['application/json', 'application/*', '*/*'].find((range) => quality.has(range));
  return decisive !== undefined && (quality.get(decisive) ?? 0) > 0;
}

interface Job {
  readonly pixels: Uint8Array;
  resolve(probs: number[]): void;
  reject(err: unknown): void;
}

/**
 * Collects decoded images and predicts them together: the first image waits up to `windowMs` for others (or until
 * `maxBatch` are there); while a batch is being predicted, new images gather and go as the next batch right after.
 */
class Batcher {
  readonly #queue: Job[] = [];
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #urgent = false;
  constructor(
    private readonly predict: (rows: Uint8Array[]) => Promise<number[][]>,
    private readonly maxBatch: number,
    private readonly windowMs: number,
    private readonly stats: ServeStats,
  ) {}

  add(pixels: Uint8Array): Promise<number[]> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ pixels, resolve, reject });
      this.stats.queued = this.#queue.length;
      this.#schedule();
    });
  }

  /** From now on, queued images go without waiting for the window (used while draining). */
  hurry(): void {
    this.#urgent = true;
    this.#schedule();
  }

  /** Fails every queued image (forced close). */
  cancel(err: Error): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const job of this.#queue.splice(0)) job.reject(err);
    this.stats.queued = 0;
  }

  #schedule(): void {
    if (this.#running || this.#queue.length === 0) return;
    if (this.#urgent || this.#queue.length >= this.maxBatch) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      void this.#run();
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        void this.#run();
      }, this.windowMs);
    }
  }

  async #run(): Promise<void> {
    if (this.#running || this.#queue.length === 0) return;
    this.#running = true;
    const jobs = this.#queue.splice(0, this.maxBatch);
    this.stats.queued = this.#queue.length;
    try {
      const probs = await this.predict(jobs.map((j) => j.pixels));
      this.stats.batches++;
      this.stats.largestBatch = Math.max(this.stats.largestBatch, jobs.length);
      jobs.forEach((j, i) => j.resolve(probs[i] ?? []));
    } catch (err) {
      for (const j of jobs) j.reject(err);
    } finally {
      this.#running = false;
    }
    // Images that arrived during the prediction have waited long enough: they go now.
    if (this.#queue.length > 0) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      void this.#run();
    }
  }
}

function positive(name: string, value: number, integer: boolean): number {
  if (!(Number.isFinite(value) && value >= (integer ? 1 : 0) && (!integer || Number.isInteger(value)))) {
    throw new ConfigError(`${name} ${quote(value)} is not valid: expected ${integer ? 'a whole number of at least 1' : 'a number of at least 0'}`);
  }
  return value;
}

export { MAX_TIMER_MS }; // the bound of the millisecond options below, kept with the other checks in errors.ts

/** A duration in milliseconds for a timer: {@link positive}, and at most {@link MAX_TIMER_MS} (about 24.8 days). */
function milliseconds(name: string, value: number, integer: boolean): number {
  positive(name, value, integer);
  if (value > MAX_TIMER_MS) {
    throw new ConfigError(`${name} ${quote(value)} is not valid: expected at most ${MAX_TIMER_MS} ms (about 24.8 days), the longest timer Node keeps`);
  }
  return value;
}

/**
 * Starts the prediction server and resolves once it listens. It speaks SageMaker's hosting contract:
 * `GET /ping` answers 200 once the model is loaded (503 before), `POST /invocations` takes one image
 * (image/jpeg, image/png or application/x-image) and answers `{ label, probabilities: { normal, bacteria, virus } }`.
 * Requests that arrive together are decoded concurrently and predicted as one batch. Bad requests get a 4xx with
 * `{ error: { code, message } }`; nothing a client sends can crash the process.
 *
 * @example
 * const server = await startServer({ model: 'runs/cpu-1/model', port: 8080 });
 * await server.ready; // ... later: await server.close()
 */
export async function startServer(options: ServeOptions = {}): Promise<PredictionServer> {
  const port = options.port ?? SERVE_DEFAULTS.port;
  if (!(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    throw new ConfigError(`port ${quote(port)} is not valid: expected a whole number from 0 to 65535`);
  }
  const host = options.host ?? SERVE_DEFAULTS.host;
  const maxBodyBytes = positive('maxBodyBytes', options.maxBodyBytes ?? SERVE_DEFAULTS.maxBodyBytes, true);
  const maxInputPixels = positive('maxInputPixels', options.maxInputPixels ?? DEFAULTS.maxInputPixels, true);
  const maxBatch = positive('maxBatch', options.maxBatch ?? SERVE_DEFAULTS.maxBatch, true);
  const maxInFlight = positive('maxInFlight', options.maxInFlight ?? SERVE_DEFAULTS.maxInFlight, true);
  const decoding = slots(positive('maxDecoding', options.maxDecoding ?? SERVE_DEFAULTS.maxDecoding, true));
  const batchWindowMs = milliseconds('batchWindowMs', options.batchWindowMs ?? SERVE_DEFAULTS.batchWindowMs, false);
  const drainTimeoutMs = milliseconds('drainTimeoutMs', options.drainTimeoutMs ?? SERVE_DEFAULTS.drainTimeoutMs, false);
  const requestTimeoutMs = milliseconds('requestTimeoutMs', options.requestTimeoutMs ?? SERVE_DEFAULTS.requestTimeoutMs, true);

  const log = (level: ServeLogLine['level'], event: string, fields: Record<string, unknown> = {}): void => {
    if (!options.onLog) return;
    try {
      options.onLog({ time: new Date().toISOString(), level, event, ...fields });
    } catch {
      // A failing logger must not take requests down with it.
    }
  };

  const stats: ServeStats = {
    requests: 0, predictions: 0, batches: 0, largestBatch: 0, clientErrors: 0, serverErrors: 0, busy: 0, aborted: 0, inFlight: 0, queued: 0,
  };
  /** Invocations being handled now (of stats.inFlight, which counts every path). */
  let invoking = 0;
  let loaded: LoadedModel | undefined;
  let loadError: string | undefined;
  let draining = false;
  const ownsModel = typeof options.model !== 'object';
  const batcher = new Batcher(
    (rows) => predictPixels((loaded as LoadedModel).model, (loaded as LoadedModel).card.imageSize, rows, maxBatch),
    maxBatch,
    batchWindowMs,
    stats,
  );

  /** Connections the server cut because their request was too slow to arrive (requestTimeoutMs). */
  const timedOut = new WeakSet<Socket>();

  const send = (req: IncomingMessage, res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
    if (res.headersSent || res.destroyed) return;
    const text = `${JSON.stringify(body)}\n`;
    const all: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers };
    // A body left unread (refused early) or a server going away: this connection ends after the answer.
    const unreadBody = !req.complete && (req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0);
    if (draining || unreadBody) all.connection = 'close';
    res.writeHead(status, all);
    res.end(req.method === 'HEAD' ? undefined : text);
  };

  const readBody = (req: IncomingMessage): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let done = false;
      const finish = (err: unknown, body?: Buffer): void => {
        if (done) return;
        done = true;
        req.off('data', onData);
        if (err) {
          req.pause();
          reject(err);
        } else resolve(body ?? Buffer.alloc(0));
      };
      const onData = (chunk: Buffer): void => {
        size += chunk.length;
        if (size > maxBodyBytes) {
          finish(new HttpError(413, 'payload_too_large', `the request body is more than the limit of ${maxBodyBytes} bytes (maxBodyBytes)`));
        } else chunks.push(chunk);
      };
      req.on('data', onData);
      req.once('end', () => finish(undefined, Buffer.concat(chunks, size)));
      req.once('aborted', () => finish(new Error('the client went away before the body was complete')));
      req.once('error', (err) => finish(err));
      req.once('close', () => {
        if (!req.complete) finish(new Error('the connection closed before the body was complete'));
      });
    });

  const invoke = async (req: IncomingMessage, res: ServerResponse): Promise<Invocation | undefined> => {
    if (req.method !== 'POST') {
      throw new HttpError(405, 'method_not_allowed', `${req.method ?? '?'} /invocations is not supported: send the image with POST`, { allow: 'POST' });
    }
    if (!loaded) {
      // Why is in the server's log (model_load_failed): paths and file contents are not for any client to read.
      throw new HttpError(503, 'not_ready', loadError ? NOT_LOADED : 'the model is still loading: retry when GET /ping answers 200');
    }
    const type = mediaType(req.headers['content-type']);
    if (!(ACCEPTED_CONTENT_TYPES as readonly string[]).includes(type)) {
      throw new HttpError(
        415,
        'unsupported_media_type',
        `${type === '' ? 'the request has no content type' : `content type ${quote(type)} is not accepted`}: send the image as image/jpeg, image/png or application/x-image`,
      );
    }
    if (!acceptsJson(req.headers.accept)) {
      throw new HttpError(406, 'not_acceptable', `Accept ${quote(req.headers.accept)} does not allow application/json, the only type this server answers with`);
    }
    const declared = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length']);
    if (declared !== undefined && declared > maxBodyBytes) {
      throw new HttpError(413, 'payload_too_large', `the request body is ${declared} bytes, more than the limit of ${maxBodyBytes} (maxBodyBytes)`);
    }
    let body: Buffer;
    try {
      body = await readBody(req);
    } catch (err) {
      if (err instanceof HttpError) throw err;
      if (timedOut.has(req.socket)) {
        // The server cut it (requestTimeoutMs): answered 408 by the clientError handler below.
        stats.clientErrors++;
        log('warn', 'request_timeout', { path: '/invocations', reason: `the body was not complete within ${requestTimeoutMs} ms (requestTimeoutMs)` });
      } else {
        stats.aborted++;
        log('warn', 'aborted', { path: '/invocations', reason: messageOf(err) });
      }
      res.destroy();
      return undefined;
    }
    if (body.length === 0) throw new HttpError(400, 'empty_body', "the request body is empty: send the image's bytes");
    // Only the formats predict reads reach a decoder, known by their first bytes whatever the content type says: none of
    // libvips' other loaders (SVG, PDF, ...) is reached from the network.
    if (!isAcceptedImage(body)) throw new HttpError(400, 'invalid_image', NOT_AN_ACCEPTED_IMAGE);
    const model = loaded;
    let pixels: Uint8Array;
    try {
      pixels = await decoding(() => decodeGray(body, { size: model.card.imageSize, name: 'request body', maxInputBytes: maxBodyBytes, maxInputPixels }));
    } catch (err) {
      if (!(err instanceof ImageError)) throw err;
      const tooLarge = /\(maxInputPixels\)|see maxInputPixels/.test(err.message);
      throw new HttpError(tooLarge ? 413 : 400, tooLarge ? 'image_too_large' : 'invalid_image', err.message);
    }
    const probs = await batcher.add(pixels);
    if (res.destroyed || req.socket.destroyed) {
      stats.aborted++;
      log('warn', 'aborted', { path: '/invocations', reason: 'the client went away before the answer' });
      return undefined;
    }
    const classes = (model.card.classes.length === CLASSES.length ? model.card.classes : CLASSES) as readonly Label[];
    const probabilities = Object.fromEntries(classes.map((c, k) => [c, probs[k] ?? 0])) as Record<Label, number>;
    return { label: classes[argmax(probs)] ?? CLASSES[0], probabilities };
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const started = performance.now();
    stats.requests++;
    stats.inFlight++;
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    let status = 0;
    let code: string | undefined;
    // A client that went away: nothing to answer, and nothing to crash on.
    req.on('error', () => {});
    res.on('error', () => {});
    try {
      if (path === '/ping') {
        if (req.method !== 'GET' && req.method !== 'HEAD') {
          throw new HttpError(405, 'method_not_allowed', `${req.method ?? '?'} /ping is not supported: use GET`, { allow: 'GET, HEAD' });
        }
        if (!loaded || draining) {
          throw new HttpError(503, 'not_ready', draining ? 'the server is shutting down' : loadError ? NOT_LOADED : 'the model is still loading');
        }
        status = 200;
        send(req, res, 200, { status: 'ok' });
      } else if (path === '/invocations') {
        if (req.method === 'POST' && loaded && invoking >= maxInFlight) {
          throw new HttpError(503, 'busy', `the server is handling ${maxInFlight} invocations already (maxInFlight): retry shortly`, { 'retry-after': '1' });
        }
        invoking++;
        const answer = await invoke(req, res).finally(() => invoking--);
        if (answer) {
          status = 200;
          stats.predictions++;
          send(req, res, 200, answer);
        }
      } else {
        throw new HttpError(404, 'not_found', `no such route: ${req.method ?? '?'} ${quote(path)} (this server answers GET /ping and POST /invocations)`);
      }
    } catch (err) {
      if (err instanceof HttpError) {
        status = err.status;
        code = err.code;
        send(req, res, err.status, { error: { code: err.code, message: err.message } }, err.headers);
      } else {
        status = 500;
        code = 'internal_error';
        log('error', 'internal_error', { path, message: messageOf(err) });
        // The detail goes to the log, not to the client (it may name paths and internals of the server).
        send(req, res, 500, { error: { code: 'internal_error', message: 'the server failed on this request; its log says why' } });
      }
    } finally {
      stats.inFlight--;
      // 503 while the model loads or the server drains is the contract (SageMaker polls /ping), not a failure.
      const expected = (code === 'not_ready' && loadError === undefined) || code === 'busy';
      if (code === 'busy') stats.busy++;
      if (status >= 500 && !expected) stats.serverErrors++;
      else if (status >= 400 && !expected) stats.clientErrors++;
      if (status > 0) {
        log(status >= 500 ? (code === 'busy' ? 'warn' : expected ? 'info' : 'error') : 'info', 'request', {
          method: req.method, path, status, ms: Math.round((performance.now() - started) * 100) / 100, ...(code ? { code } : {}),
        });
      }
      if (draining) server.closeIdleConnections();
    }
  };

  // Node checks request timeouts every connectionsCheckingInterval (30 s by default): often enough for the limit to hold.
  const connectionsCheckingInterval = Math.min(30_000, Math.max(50, Math.floor(requestTimeoutMs / 4)));
  const server = createServer({ requestTimeout: requestTimeoutMs, connectionsCheckingInterval }, (req, res) => {
    void handle(req, res);
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // Malformed HTTP: answer 400 (431 for oversized headers, 408 for a request too slow to arrive) when the socket
    // still takes it, then drop the connection.
    if (err.code !== 'ECONNRESET' && socket.writable) {
      const [status, code, message] =
        err.code === 'HPE_HEADER_OVERFLOW'
          ? ['431 Request Header Fields Too Large', 'headers_too_large', 'the request headers are too large']
          : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
            ? ['408 Request Timeout', 'request_timeout', `the request was not complete within ${requestTimeoutMs} ms (requestTimeoutMs)`]
            : ['400 Bad Request', 'bad_request', `malformed HTTP request (${err.code ?? 'parse error'})`];
      if (code === 'request_timeout') timedOut.add(socket);
      const body = JSON.stringify({ error: { code, message } });
      socket.end(`HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    } else socket.destroy();
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(new ConfigError(`cannot listen on ${quote(host)} port ${port}: ${err.code === 'EADDRINUSE' ? 'the port is in use' : messageOf(err)}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (err) => log('error', 'server_error', { message: messageOf(err) }));
  const actualPort = (server.address() as AddressInfo).port;
  const urlHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  log('info', 'listening', { host, port: actualPort, maxBatch, maxInFlight, maxDecoding: decoding.limit, batchWindowMs, maxBodyBytes });

  const given = options.model;
  if (typeof given === 'object') loaded = given;
  const ready: Promise<void> =
    typeof given === 'object'
      ? Promise.resolve()
      : loadModel(given).then(
          (m) => {
            if (draining) {
              m.dispose();
              return;
            }
            loaded = m;
            log('info', 'model_loaded', { dir: m.dir, imageSize: m.card.imageSize, classes: m.card.classes });
          },
          (err: unknown) => {
            loadError = messageOf(err);
            log('error', 'model_load_failed', { message: loadError });
            throw err;
          },
        );
  ready.catch(() => {}); // callers that never await `ready` still see the failure through /ping and the log

  let closing: Promise<void> | undefined;
  const closeNow = (): void => {
    batcher.cancel(new Error('the server was stopped'));
    server.closeAllConnections();
  };
  const close = (closeOptions: { force?: boolean } = {}): Promise<void> => {
    if (closeOptions.force) closeNow();
    if (closing) return closing;
    draining = true;
    log('info', 'draining', { inFlight: stats.inFlight, queued: stats.queued });
    closing = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        log('warn', 'drain_timeout', { inFlight: stats.inFlight });
        closeNow();
      }, drainTimeoutMs);
      timer.unref();
      server.close(() => {
        clearTimeout(timer);
        resolve();
      });
      server.closeIdleConnections();
      batcher.hurry();
    }).then(async () => {
      await ready.catch(() => {});
      if (ownsModel && loaded) loaded.dispose();
      loaded = undefined;
      log('info', 'closed', { requests: stats.requests, predictions: stats.predictions, batches: stats.batches });
    });
    return closing;
  };

  return { url: `http://${urlHost}:${actualPort}`, port: actualPort, ready, stats, close };
}

/** A JPEG (FF D8 FF), PNG (its 8-byte signature), WebP (RIFF....WEBP) or TIFF (II*\0, MM\0*), by the first bytes. */
function isAcceptedImage(body: Buffer): boolean {
  const starts = (bytes: readonly number[], at = 0): boolean => bytes.every((b, k) => body[at + k] === b);
  return (
    starts([0xff, 0xd8, 0xff]) ||
    starts([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]) ||
    (starts([0x52, 0x49, 0x46, 0x46]) && starts([0x57, 0x45, 0x42, 0x50], 8)) ||
    starts([0x49, 0x49, 0x2a, 0x00]) ||
    starts([0x4d, 0x4d, 0x00, 0x2a])
  );
}
const NOT_AN_ACCEPTED_IMAGE = 'the request body is not a JPEG, PNG, WebP or TIFF image (by its first bytes): send the image as one of those';

/** What a client is told when the model failed to load (the reason goes to the server's log only). */
const NOT_LOADED = 'the model could not be loaded: see the server log (event model_load_failed)';

/** Options of {@link serveUntilSignal}: the server's, plus the signals that stop it. */
export interface ServeUntilSignalOptions extends ServeOptions {
  /** Signals that stop the server gracefully (a second one cuts the connections at once). Default SIGTERM, SIGINT. */
  readonly signals?: readonly NodeJS.Signals[];
  /** Called once the server listens (the model may still be loading). */
  readonly onStart?: (server: PredictionServer) => void;
}

/**
 * Runs the server until SIGTERM or SIGINT: then it stops accepting connections, finishes the requests in flight and
 * resolves to 0. Resolves to 1 when the model cannot be loaded. A second signal cuts the remaining connections.
 * For `pneumotype serve` (the CLI sets `process.exitCode` to the result; nothing is left running).
 *
 * @example process.exitCode = await serveUntilSignal({ model: '/opt/ml/model', onLog: (l) => console.log(JSON.stringify(l)) })
 */
export async function serveUntilSignal(options: ServeUntilSignalOptions = {}): Promise<number> {
  const signals = options.signals ?? ['SIGTERM', 'SIGINT'];
  let received: NodeJS.Signals | undefined;
  let onFirst: (signal: NodeJS.Signals) => void = () => {};
  const stopped = new Promise<NodeJS.Signals>((resolve) => {
    onFirst = resolve;
  });
  let server: PredictionServer | undefined;
  let closed = false;
  const logSignal = (level: ServeLogLine['level'], signal: NodeJS.Signals, action: string): void => {
    try {
      options.onLog?.({ time: new Date().toISOString(), level, event: 'signal', signal, action });
    } catch {
      // A failing logger must not keep the server from stopping (the server's own lines are guarded alike).
    }
  };
  const handler = (signal: NodeJS.Signals): void => {
    if (received === undefined) {
      received = signal;
      onFirst(signal);
    } else {
      logSignal('warn', signal, 'closing every connection now');
      void server?.close({ force: true });
    }
  };
  for (const s of signals) process.on(s, handler);
  try {
    server = await startServer(options);
    options.onStart?.(server);
    const first = await Promise.race([server.ready.then(() => undefined, () => 'failed' as const), stopped]);
    if (first === 'failed') {
      await server.close();
      closed = true;
      return 1;
    }
    const signal = await stopped;
    logSignal('info', signal, 'draining');
    await server.close();
    closed = true;
    return 0;
  } finally {
    for (const s of signals) process.off(s, handler);
    // Whatever went wrong (an onStart that throws), nothing is left listening.
    if (server && !closed) await server.close({ force: true }).catch(() => {});
  }
}
