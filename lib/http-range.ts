// Random access to a remote file through HTTP Range requests: a yauzl RandomAccessReader to read zips in place.
import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import nodeFetch from 'node-fetch';
import type { Response } from 'node-fetch';
import yauzl from 'yauzl';
import { DEFAULTS } from './config.js';
import { FetchError, IntegrityError, PneumotypeError, checkInteger, messageOf, quote } from './errors.js';
import {
  backoffDelay,
  cancel,
  fetchOwnOrigin,
  IdleTimer,
  isCertificateError,
  isRedirectLoop,
  isRequestRefused,
  maskUserInfo,
  isTransientStatus,
  parseContentRange,
  parseRetryAfter,
  proxyAgentFor,
  sleep,
  splitCredentials,
  TransientError,
  type FetchFn,
} from './fetch.js';

/** Options of {@link openHttpRangeReader}. */
export interface HttpRangeReaderOptions {
  url: string;
  /** HTTP client. Default node-fetch. */
  fetch?: FetchFn;
  /** Transient failures retried per request. Default DEFAULTS.fetchRetries. */
  retries?: number;
  /** First backoff in ms, doubling with jitter. Default DEFAULTS.fetchBackoffMs. */
  backoffMs?: number;
  /** No bytes for this long counts as a transient failure. Default DEFAULTS.fetchTimeoutMs. */
  timeoutMs?: number;
  /** Read-ahead block for small reads (zip headers, central directory, small entries). Default 1 MiB. */
  blockSize?: number;
  /** Blocks kept in memory (least recently used dropped first). Default 16. */
  cacheBlocks?: number;
  /** Called with the body bytes of every response, to count what was transferred. */
  onBytes?: (n: number) => void;
  signal?: AbortSignal;
  /** Environment read for the proxy variables. Default process.env. */
  env?: NodeJS.ProcessEnv;
}

/** An opened remote file: pass `reader` and `size` to `yauzl.fromRandomAccessReader`. */
export interface HttpRangeReader {
  reader: yauzl.RandomAccessReader;
  size: number;
  etag?: string;
  lastModified?: string;
  supportsRange: true;
}

const DEFAULT_BLOCK_SIZE = 1024 * 1024;
const DEFAULT_CACHE_BLOCKS = 16;

/**
 * Probes `url` (HEAD, or a one-byte ranged GET when HEAD is refused or inconclusive) for its size and Range support
 * and returns a yauzl RandomAccessReader over it. Every read is a Range request guarded by If-Range with the file's
 * strong ETag or Last-Modified, so a file that changes on the server fails with an IntegrityError instead of mixing two
 * versions. A server that sends neither has only its length checked (a change of the same length is then caught by
 * the entries' CRC-32 as they are extracted, not here).
 *
 * @example
 * const { reader, size } = await openHttpRangeReader({ url: SOURCES.v3.url });
 * yauzl.fromRandomAccessReader(reader, size, { lazyEntries: true }, (err, zip) => { ... });
 */
export async function openHttpRangeReader(options: HttpRangeReaderOptions): Promise<HttpRangeReader> {
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  const cacheBlocks = options.cacheBlocks ?? DEFAULT_CACHE_BLOCKS;
  checkInteger('blockSize', blockSize, 1);
  checkInteger('cacheBlocks', cacheBlocks, 1);
  // A user name and password in the URL go as Basic authorization (node-fetch drops it on a redirect to another
  // host); messages show them as ***.
  const credentials = splitCredentials(options.url);
  const client: Client = {
    url: credentials.shown,
    requestUrl: credentials.url,
    authorization: credentials.authorization,
    fetch: options.fetch ?? nodeFetch,
    agent: proxyAgentFor(options.env ?? process.env),
    retries: options.retries ?? DEFAULTS.fetchRetries,
    backoffMs: options.backoffMs ?? DEFAULTS.fetchBackoffMs,
    timeoutMs: options.timeoutMs ?? DEFAULTS.fetchTimeoutMs,
    onBytes: options.onBytes ?? (() => {}),
    signal: options.signal,
  };
  const info = await withRetries(client, 'Probing', () => probe(client), client.signal);
  const reader = new HttpRangeRandomAccessReader(client, info, blockSize, cacheBlocks);
  const result: HttpRangeReader = { reader, size: info.size, supportsRange: true };
  if (info.etag !== undefined) result.etag = info.etag;
  if (info.lastModified !== undefined) result.lastModified = info.lastModified;
  return result;
}

interface Client {
  /** The URL as messages show it (credentials as ***). */
  url: string;
  /** The URL requested (without credentials) and the authorization they make. */
  requestUrl: string;
  authorization: string | undefined;
  fetch: FetchFn;
  agent: ReturnType<typeof proxyAgentFor>;
  retries: number;
  backoffMs: number;
  timeoutMs: number;
  onBytes: (n: number) => void;
  signal: AbortSignal | undefined;
}

interface RemoteInfo {
  size: number;
  etag: string | undefined;
  lastModified: string | undefined;
}

async function probe(c: Client): Promise<RemoteInfo> {
  const idle = new IdleTimer(c.timeoutMs, c.signal);
  try {
    const head = await request(c, { method: 'HEAD', headers: { 'Accept-Encoding': 'identity' }, signal: idle.signal }, idle);
    cancel(head);
    if (isTransientStatus(head.status)) throw transientStatus(head);
    const length = Number(head.headers.get('content-length') ?? Number.NaN);
    if (head.ok && /\bbytes\b/i.test(head.headers.get('accept-ranges') ?? '') && Number.isSafeInteger(length)) {
      return { size: length, ...validators(head) };
    }
    // HEAD refused (405, or 403 from URLs signed for GET only) or inconclusive: ask for the first byte.
    idle.touch();
    const res = await request(c, { headers: { Range: 'bytes=0-0', 'Accept-Encoding': 'identity' }, signal: idle.signal }, idle);
    if (res.status === 206) {
      const range = parseContentRange(res.headers.get('content-range'));
      // The one byte asked for, and no more: a server that sends an endless body is not read to its end.
      let got = 0;
      for await (const chunk of res.body ?? []) {
        got += (chunk as Buffer).length;
        break;
      }
      cancel(res);
      c.onBytes(got);
      if (range !== undefined) return { size: range.total, ...validators(res) };
    } else {
      cancel(res);
    }
    if (isTransientStatus(res.status)) throw transientStatus(res);
    if (res.status === 200 || res.status === 206 || res.status === 416) {
      throw new FetchError(
        `The server of ${quote(c.url)} does not support HTTP Range requests; download the whole archive with \`pneumotype fetch\` instead`,
        { url: c.url, status: res.status },
      );
    }
    throw new FetchError(`Cannot read ${quote(c.url)}: the server answered HTTP ${res.status} ${res.statusText}`.trimEnd(), {
      url: c.url,
      status: res.status,
    });
  } finally {
    idle.clear();
  }
}

function validators(res: Response): { etag: string | undefined; lastModified: string | undefined } {
  return { etag: res.headers.get('etag') ?? undefined, lastModified: res.headers.get('last-modified') ?? undefined };
}

async function request(c: Client, init: { method?: string; headers: Record<string, string>; signal: AbortSignal }, idle: IdleTimer): Promise<Response> {
  try {
    const options = { ...init, agent: c.agent, compress: false };
    return await (c.authorization === undefined ? c.fetch(c.requestUrl, options) : fetchOwnOrigin(c.fetch, c.requestUrl, options, c.authorization));
  } catch (err) {
    throw networkError(c, err, idle);
  }
}

function networkError(c: Client, err: unknown, idle: IdleTimer): Error {
  if (c.signal?.aborted) return abortedError(c);
  if (isRedirectLoop(err)) {
    return new FetchError(`Cannot read ${quote(c.url)}: ${maskUserInfo(messageOf(err))} (a redirect loop?)`, { url: c.url, cause: err });
  }
  // The same on every try: a certificate not accepted, or a request the client refuses to make.
  if (isCertificateError(err)) {
    return new FetchError(
      `Cannot read ${quote(c.url)}: its TLS certificate was not accepted (${maskUserInfo(messageOf(err))}); behind a proxy that inspects TLS, ` +
        'give Node its certificate authority: NODE_EXTRA_CA_CERTS=/path/to/ca.pem',
      { url: c.url, cause: err },
    );
  }
  if (isRequestRefused(err)) return new FetchError(`Cannot read ${quote(c.url)}: ${maskUserInfo(messageOf(err))}`, { url: c.url, cause: err });
  // A project error (a proxy refused up front, say) says what it is itself.
  if (err instanceof PneumotypeError) return err;
  if (idle.timedOut) return new TransientError(`no data for ${c.timeoutMs} ms`, { cause: err });
  // node-fetch's messages quote the URL as requested: its password is not in it, a presigned link's signature is.
  return new TransientError(maskUserInfo(messageOf(err)), { cause: err });
}

function abortedError(c: Client): FetchError {
  return new FetchError(`Reading ${quote(c.url)} was aborted`, { url: c.url, cause: c.signal?.reason });
}

function transientStatus(res: Response): TransientError {
  return new TransientError(`HTTP ${res.status} ${res.statusText}`.trimEnd(), {
    status: res.status,
    retryAfterMs: parseRetryAfter(res.headers.get('retry-after')),
  });
}

/** Runs `fn` until it succeeds, retrying TransientErrors with backoff; `what` names the work in the final error. */
async function withRetries<T>(c: Client, what: string, fn: () => Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  for (let failures = 1; ; failures++) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof TransientError) || signal?.aborted) throw err;
      if (failures > c.retries) throw exhausted(c, what, failures, err);
      await sleep(Math.max(backoffDelay(c.backoffMs, failures), err.retryAfterMs ?? 0), signal).catch(() => {
        throw c.signal?.aborted ? abortedError(c) : err;
      });
    }
  }
}

function exhausted(c: Client, what: string, attempts: number, err: TransientError): FetchError {
  return new FetchError(`${what} ${quote(c.url)} failed after ${attempts} attempt${attempts === 1 ? '' : 's'}: ${err.message}`, {
    url: c.url,
    ...(err.status === undefined ? {} : { status: err.status }),
    cause: err,
  });
}

/**
 * The bytes [start, end) of the remote file as chunks, over one Range request, resuming with a new one where a
 * transient failure cut it. Every response must still be the probed file (If-Range, ETag else Last-Modified, total length).
 */
async function* rangeChunks(c: Client, info: RemoteInfo, start: number, end: number, signal: AbortSignal): AsyncGenerator<Buffer> {
  const validator = info.etag !== undefined && !info.etag.startsWith('W/') ? info.etag : info.lastModified;
  let pos = start;
  let failures = 0;
  while (pos < end) {
    const idle = new IdleTimer(c.timeoutMs, signal);
    let res: Response | undefined;
    let progressed = false;
    try {
      const headers: Record<string, string> = { Range: `bytes=${pos}-${end - 1}`, 'Accept-Encoding': 'identity' };
      if (validator !== undefined) headers['If-Range'] = validator;
      res = await request(c, { headers, signal: idle.signal }, idle);
      checkRangeResponse(c, info, res, pos);
      const it = (res.body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
      while (pos < end) {
        let next: IteratorResult<Buffer>;
        try {
          next = await it.next();
        } catch (err) {
          throw signal.aborted && !c.signal?.aborted ? err : networkError(c, err, idle);
        }
        if (next.done) break;
        c.onBytes(next.value.length);
        const chunk = next.value.length > end - pos ? next.value.subarray(0, end - pos) : next.value;
        pos += chunk.length;
        progressed = true;
        idle.clear(); // the consumer may be slow; only the server's silence counts
        yield chunk;
        idle.touch();
      }
      if (pos < end) throw new TransientError(`the connection closed at byte ${pos} of the range ${start}-${end - 1}`);
    } catch (err) {
      if (!(err instanceof TransientError) || signal.aborted) throw err;
      if (progressed) failures = 0;
      failures++;
      if (failures > c.retries) throw exhausted(c, `Reading bytes ${start}-${end - 1} of`, failures, err);
      await sleep(Math.max(backoffDelay(c.backoffMs, failures), err.retryAfterMs ?? 0), signal);
    } finally {
      idle.clear();
      if (res !== undefined) cancel(res);
    }
  }
}

function checkRangeResponse(c: Client, info: RemoteInfo, res: Response, pos: number): void {
  const status = res.status;
  if (status === 206) {
    const range = parseContentRange(res.headers.get('content-range'));
    const { etag, lastModified } = validators(res);
    if (info.etag !== undefined && etag !== undefined && etag !== info.etag) throw changedError(c, info, res);
    // Without an ETag, Last-Modified is all there is: a server that ignores If-Range still tells the change by it.
    if (info.etag === undefined && info.lastModified !== undefined && lastModified !== undefined && lastModified !== info.lastModified) {
      throw changedError(c, info, res);
    }
    if (range !== undefined && range.total !== info.size) throw changedError(c, info, res);
    if (range === undefined || range.start !== pos) {
      throw new FetchError(
        `Reading ${quote(c.url)} at byte ${pos} failed: the server answered with Content-Range ${quote(res.headers.get('content-range'))}`,
        { url: c.url, status },
      );
    }
    return;
  }
  if (status === 200 && sameFile(info, res)) {
    // The whole file again, unchanged: something between (a proxy, say) drops the Range header.
    cancel(res);
    throw new FetchError(
      `The server of ${quote(c.url)} answered a Range request with the whole file (HTTP 200, the same ${info.etag !== undefined ? 'ETag' : 'Last-Modified'}): ` +
        'Range requests do not get through (a proxy between may drop them); download the whole archive with `pneumotype fetch` instead',
      { url: c.url, status },
    );
  }
  if (status === 200 && info.etag === undefined && info.lastModified === undefined && Number(res.headers.get('content-length')) === info.size) {
    // No validator to compare and the same length: the Range header was ignored, the file did not change (opening it
    // again would fail the same way).
    cancel(res);
    throw new FetchError(
      `The server of ${quote(c.url)} answered a Range request with the whole file (HTTP 200, ${info.size} bytes, no ETag or Last-Modified): ` +
        'this server (or a proxy between) ignores Range requests; download the whole archive instead (`pneumotype run --download-whole`, or `pneumotype fetch`)',
      { url: c.url, status },
    );
  }
  if (status === 200 || status === 416) throw changedError(c, info, res);
  if (isTransientStatus(status)) throw transientStatus(res);
  throw new FetchError(`Cannot read ${quote(c.url)}: the server answered HTTP ${status} ${res.statusText}`.trimEnd(), { url: c.url, status });
}

/** True when a response names the same file as `info`: its ETag (else Last-Modified) and its length. */
function sameFile(info: RemoteInfo, res: Response): boolean {
  const { etag, lastModified } = validators(res);
  const length = Number(res.headers.get('content-length') ?? Number.NaN);
  const same = info.etag !== undefined ? etag === info.etag : info.lastModified !== undefined && lastModified === info.lastModified;
  return same && (!Number.isSafeInteger(length) || length === info.size);
}

function changedError(c: Client, info: RemoteInfo, res: Response): IntegrityError {
  const { etag, lastModified } = validators(res);
  const range = parseContentRange(res.headers.get('content-range'));
  const total = range?.total ?? contentRangeStar(res) ?? (res.status === 200 ? Number(res.headers.get('content-length') ?? Number.NaN) : Number.NaN);
  let what: string;
  let expected: string;
  let actual: string;
  if (info.etag !== undefined && etag !== undefined && etag !== info.etag) {
    what = `ETag ${info.etag} is now ${etag}`;
    [expected, actual] = [info.etag, etag];
  } else if (info.etag === undefined && info.lastModified !== undefined && lastModified !== undefined && lastModified !== info.lastModified) {
    what = `Last-Modified ${info.lastModified} is now ${lastModified}`;
    [expected, actual] = [info.lastModified, lastModified];
  } else if (Number.isSafeInteger(total) && total !== info.size) {
    what = `length ${info.size} is now ${total}`;
    [expected, actual] = [String(info.size), String(total)];
  } else if (info.etag === undefined && info.lastModified === undefined) {
    what = `it answered HTTP ${res.status} to a Range request`;
    [expected, actual] = ['HTTP 206', `HTTP ${res.status}`];
  } else {
    const was = info.etag ?? info.lastModified ?? '';
    what = `it no longer matches ${info.etag !== undefined ? 'ETag' : 'Last-Modified'} ${was}`;
    [expected, actual] = [was, etag ?? lastModified ?? `HTTP ${res.status}`];
  }
  cancel(res);
  return new IntegrityError(`Remote file ${quote(c.url)} changed while it was being read (${what}); open it again`, {
    expected,
    actual,
    path: c.url,
  });
}

function contentRangeStar(res: Response): number | undefined {
  const m = /^bytes\s+\*\/(\d+)$/i.exec(res.headers.get('content-range') ?? '');
  return m ? Number(m[1]) : undefined;
}

/** Writes to a stream, waiting for 'drain' when it is full; rejects when `signal` aborts. */
async function write(out: PassThrough, chunk: Buffer, signal: AbortSignal): Promise<void> {
  if (!out.write(chunk)) await once(out, 'drain', { signal });
}

/**
 * yauzl's RandomAccessReader over HTTP. Small reads (headers, the central directory) go through a cache of aligned
 * blocks read ahead; ranges longer than a block are streamed with their own Range request, after whatever prefix is
 * already cached.
 */
class HttpRangeRandomAccessReader extends yauzl.RandomAccessReader {
  readonly #c: Client;
  readonly #info: RemoteInfo;
  readonly #blockSize: number;
  readonly #cacheBlocks: number;
  readonly #blocks = new Map<number, Promise<Buffer>>();
  readonly #closed = new AbortController();
  readonly #signal: AbortSignal;

  constructor(client: Client, info: RemoteInfo, blockSize: number, cacheBlocks: number) {
    super();
    this.#c = client;
    this.#info = info;
    this.#blockSize = blockSize;
    this.#cacheBlocks = cacheBlocks;
    this.#signal = client.signal ? AbortSignal.any([client.signal, this.#closed.signal]) : this.#closed.signal;
  }

  override read(buffer: Buffer, offset: number, length: number, position: number, callback: (err: Error | null, bytesRead?: number) => void): void {
    if (length > this.#blockSize) {
      super.read(buffer, offset, length, position, callback);
      return;
    }
    this.#readSmall(buffer, offset, length, position).then(
      (n) => callback(null, n),
      (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))),
    );
  }

  override _readStreamForRange(start: number, end: number): Readable {
    const out = new PassThrough();
    const stop = new AbortController();
    const signal = AbortSignal.any([this.#signal, stop.signal]);
    out.once('close', () => stop.abort());
    const pump = async (): Promise<void> => {
      let pos = start;
      while (pos < end) {
        const index = Math.floor(pos / this.#blockSize);
        if (this.#blocks.has(index) || end - pos <= this.#blockSize) {
          const block = await this.#block(index);
          const from = pos - index * this.#blockSize;
          const to = Math.min(block.length, end - index * this.#blockSize);
          if (to <= from) throw new Error(`unexpected end of ${this.#c.url} at byte ${pos}`);
          await write(out, block.subarray(from, to), signal);
          pos += to - from;
          continue;
        }
        for await (const chunk of rangeChunks(this.#c, this.#info, pos, end, signal)) {
          await write(out, chunk, signal);
          pos += chunk.length;
        }
      }
      out.end();
    };
    pump().catch((err: unknown) => {
      if (!stop.signal.aborted) out.destroy(this.#c.signal?.aborted ? abortedError(this.#c) : (err as Error));
    });
    return out;
  }

  override close(callback: (err: Error | null) => void): void {
    this.#closed.abort(new Error('reader closed'));
    this.#blocks.clear();
    setImmediate(() => callback(null));
  }

  async #readSmall(buffer: Buffer, offset: number, length: number, position: number): Promise<number> {
    let done = 0;
    while (done < length && position + done < this.#info.size) {
      const pos = position + done;
      const index = Math.floor(pos / this.#blockSize);
      const block = await this.#block(index);
      const from = pos - index * this.#blockSize;
      const n = Math.min(block.length - from, length - done);
      if (n <= 0) break;
      block.copy(buffer, offset + done, from, from + n);
      done += n;
    }
    return done;
  }

  /** Block `index` from the cache, or fetched (once, however many readers ask at the same time). */
  #block(index: number): Promise<Buffer> {
    const cached = this.#blocks.get(index);
    if (cached !== undefined) {
      this.#blocks.delete(index);
      this.#blocks.set(index, cached);
      return cached;
    }
    const start = index * this.#blockSize;
    const end = Math.min(this.#info.size, start + this.#blockSize);
    const promise = (async () => {
      const parts: Buffer[] = [];
      for await (const chunk of rangeChunks(this.#c, this.#info, start, end, this.#signal)) parts.push(chunk);
      return Buffer.concat(parts);
    })();
    this.#blocks.set(index, promise);
    promise.catch(() => {
      if (this.#blocks.get(index) === promise) this.#blocks.delete(index);
    });
    while (this.#blocks.size > this.#cacheBlocks) {
      const oldest = this.#blocks.keys().next().value as number;
      this.#blocks.delete(oldest);
    }
    return promise;
  }
}
