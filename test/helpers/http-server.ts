// Test helper: a loopback HTTP file server with Range, If-Range, HEAD, ETag/Last-Modified and injected faults.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename } from 'node:path';
import { Readable } from 'node:stream';

/** What the server serves and which faults it injects. */
export interface FileServerOptions {
  /** File served with streams (read anew for every request). */
  readonly file?: string;
  /** Bytes served when no file is given. */
  readonly data?: Buffer;
  /** URL path the content is served at (default `/` + the file's base name, or `/data.zip`). Other paths: 404. */
  readonly path?: string;
  /** ETag header (quoted), `false` for none. Default: derived from the content (data) or size and mtime (file). */
  readonly etag?: string | false;
  /** Last-Modified header, `false` for none. Default: the file's mtime, or a fixed date for data. */
  readonly lastModified?: string | false;
  /** Answers every request with 200 and the whole body, without Accept-Ranges. */
  readonly ignoreRange?: boolean;
  /** Advertises `Accept-Ranges: none` and answers every Range request with 416. */
  readonly rejectRange?: boolean;
  /** The first N requests (any method) are answered 503 with `Retry-After: retryAfter`. */
  readonly failFirst?: number;
  /** Retry-After value sent with injected 503s (default "0"). */
  readonly retryAfter?: string;
  /** Destroys the socket after sending this many body bytes, for the first `cutTimes` GET bodies. */
  readonly cutAfterBytes?: number;
  /** How many GET bodies are cut (default 1). */
  readonly cutTimes?: number;
  /**
   * Milliseconds between sending the last bytes of a cut body and destroying the socket (default 100), so the client
   * has consumed them: node-fetch drops body bytes still buffered when the socket dies.
   */
  readonly cutDelayMs?: number;
  /** Sends this many body bytes then stalls (sends nothing, keeps the socket open), for the first `stallTimes` GETs. */
  readonly stallAfterBytes?: number;
  /** How many GET bodies stall (default 1). */
  readonly stallTimes?: number;
  /** HEAD is answered 405 Method Not Allowed. */
  readonly noHead?: boolean;
  /** Ignores If-Range: answers 206 with the current content even when the validator no longer matches. */
  readonly ignoreIfRange?: boolean;
}

/** One request the server saw. */
export interface LoggedRequest {
  readonly method: string;
  readonly path: string;
  readonly range?: string;
  readonly ifRange?: string;
}

/** A running server; `close()` it in `after`/`finally`. */
export interface FileServer {
  /** Full URL of the served content, `http://127.0.0.1:PORT/path`. */
  readonly url: string;
  /** Base URL without the path, for 404s on other paths. */
  readonly origin: string;
  readonly requests: LoggedRequest[];
  /** Body bytes written to sockets so far (all requests). */
  readonly bytesSent: number;
  close(): Promise<void>;
  /** Replaces the content (and ETag / Last-Modified, which default to new values derived from the data). */
  setData(data: Buffer, etag?: string | false, lastModified?: string | false): void;
}

interface Content {
  size: number;
  etag: string | undefined;
  lastModified: string | undefined;
  open(start: number, end: number): Readable; // end inclusive
}

const FIXED_DATE = new Date(Date.UTC(2018, 0, 6, 12, 0, 0));

function dataContent(data: Buffer, etag: string | false | undefined, lastModified: string | false | undefined, date: Date): Content {
  return {
    size: data.length,
    etag: etag === false ? undefined : (etag ?? `"${createHash('sha256').update(data).digest('hex').slice(0, 16)}"`),
    lastModified: lastModified === false ? undefined : (lastModified ?? date.toUTCString()),
    open: (start, end) => Readable.from([data.subarray(start, end + 1)]),
  };
}

/**
 * Starts a file server on 127.0.0.1 with an ephemeral port.
 *
 * @example
 * const server = await startFileServer({ data: randomBytes(300_000), cutAfterBytes: 100_000 });
 * try { await fetchDataset({ source: server.url, outDir }) } finally { await server.close() }
 */
export async function startFileServer(options: FileServerOptions): Promise<FileServer> {
  if (options.file === undefined && options.data === undefined) throw new Error('startFileServer needs file or data');
  const urlPath = options.path ?? `/${options.file !== undefined ? basename(options.file) : 'data.zip'}`;
  let content: Content | undefined =
    options.data !== undefined && options.file === undefined ? dataContent(options.data, options.etag, options.lastModified, FIXED_DATE) : undefined;
  let dataVersion = 0;
  const requests: LoggedRequest[] = [];
  let bytesSent = 0;
  let failuresLeft = options.failFirst ?? 0;
  let cutsLeft = options.cutAfterBytes === undefined ? 0 : (options.cutTimes ?? 1);
  let stallsLeft = options.stallAfterBytes === undefined ? 0 : (options.stallTimes ?? 1);

  async function current(): Promise<Content> {
    if (content) return content;
    const file = options.file as string;
    const s = await stat(file);
    return {
      size: s.size,
      etag: options.etag === false ? undefined : (options.etag ?? `"${s.size.toString(16)}-${Math.floor(s.mtimeMs).toString(16)}"`),
      lastModified: options.lastModified === false ? undefined : (options.lastModified ?? s.mtime.toUTCString()),
      open: (start, end) => createReadStream(file, { start, end }),
    };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const logged: { method: string; path: string; range?: string; ifRange?: string } = { method, path: req.url ?? '/' };
    if (typeof req.headers.range === 'string') logged.range = req.headers.range;
    if (typeof req.headers['if-range'] === 'string') logged.ifRange = req.headers['if-range'];
    requests.push(logged);

    if (failuresLeft > 0) {
      failuresLeft--;
      res.writeHead(503, { 'Retry-After': options.retryAfter ?? '0', 'Content-Type': 'text/plain' });
      res.end('injected failure\n');
      return;
    }
    if (new URL(req.url ?? '/', 'http://x').pathname !== urlPath) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    if (method === 'HEAD' && options.noHead) {
      res.writeHead(405, { Allow: 'GET' });
      res.end();
      return;
    }
    if (method !== 'GET' && method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' });
      res.end();
      return;
    }
    const c = await current();
    const headers: Record<string, string> = { 'Content-Type': 'application/zip' };
    if (c.etag !== undefined) headers.ETag = c.etag;
    if (c.lastModified !== undefined) headers['Last-Modified'] = c.lastModified;
    if (options.rejectRange) headers['Accept-Ranges'] = 'none';
    else if (!options.ignoreRange) headers['Accept-Ranges'] = 'bytes';

    let start = 0;
    let end = c.size - 1;
    let status = 200;
    const range = req.headers.range;
    if (range !== undefined && !options.ignoreRange) {
      if (options.rejectRange) {
        res.writeHead(416, { ...headers, 'Content-Range': `bytes */${c.size}` });
        res.end();
        return;
      }
      const ifRange = req.headers['if-range'];
      const validatorOk = options.ignoreIfRange || ifRange === undefined || ifRange === c.etag || (ifRange === c.lastModified && c.lastModified !== undefined);
      const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
      if (validatorOk && m && (m[1] !== '' || m[2] !== '')) {
        if (m[1] === '') {
          const suffix = Number(m[2]);
          start = Math.max(0, c.size - suffix);
        } else {
          start = Number(m[1]);
          if (m[2] !== '') end = Math.min(Number(m[2]), c.size - 1);
        }
        if (start >= c.size || start > end || (m[1] === '' && Number(m[2]) === 0)) {
          res.writeHead(416, { ...headers, 'Content-Range': `bytes */${c.size}` });
          res.end();
          return;
        }
        status = 206;
        headers['Content-Range'] = `bytes ${start}-${end}/${c.size}`;
      }
    }
    const length = Math.max(0, end - start + 1);
    headers['Content-Length'] = String(length);
    res.writeHead(status, headers);
    if (method === 'HEAD' || length === 0) {
      res.end();
      return;
    }

    const cut = cutsLeft > 0 ? (cutsLeft--, options.cutAfterBytes) : undefined;
    const stall = cut === undefined && stallsLeft > 0 ? (stallsLeft--, options.stallAfterBytes) : undefined;
    const limit = cut ?? stall;
    const body = c.open(start, end);
    let sent = 0;
    res.on('close', () => body.destroy());
    for await (const chunk of body as AsyncIterable<Buffer>) {
      let piece = chunk;
      if (limit !== undefined && sent + piece.length >= limit) piece = piece.subarray(0, Math.max(0, limit - sent));
      if (piece.length > 0) {
        sent += piece.length;
        bytesSent += piece.length;
        if (!res.write(piece)) await new Promise<void>((resolve) => {
          // Whichever comes first; the other listener goes too, or they pile up over a long body.
          const done = (): void => {
            res.off('drain', done);
            res.off('close', done);
            resolve();
          };
          res.once('drain', done);
          res.once('close', done);
        });
      }
      if (limit !== undefined && sent >= limit) {
        body.destroy();
        if (cut !== undefined) {
          await new Promise<void>((resolve) => res.write('', () => resolve()));
          await new Promise((resolve) => setTimeout(resolve, options.cutDelayMs ?? 100));
          res.socket?.destroy();
        }
        return; // a stall leaves the socket open: the client must time out
      }
      if (res.destroyed) return;
    }
    res.end();
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500);
      res.destroy(err instanceof Error ? err : new Error(String(err)));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const origin = `http://127.0.0.1:${port}`;
  return {
    url: `${origin}${urlPath}`,
    origin,
    requests,
    get bytesSent() {
      return bytesSent;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
    setData(data, etag, lastModified) {
      dataVersion++;
      content = dataContent(data, etag, lastModified, new Date(FIXED_DATE.getTime() + dataVersion * 86_400_000));
    },
  };
}

/**
 * Writes 64 KiB chunks of zeros to `res` until the client goes away or `limit` bytes are sent, then ends it: a body
 * that would be endless to a client that reads it whole (which then fails its test instead of hanging it). Returns
 * a function that tells how many bytes were sent so far.
 */
export function sendLongBody(res: ServerResponse, limit: number): () => number {
  let sent = 0;
  const chunk = Buffer.alloc(64 * 1024);
  const pump = (): void => {
    while (!res.destroyed && sent < limit && res.write(chunk)) sent += chunk.length;
    if (res.destroyed) return;
    if (sent < limit) res.once('drain', pump);
    else res.end();
  };
  pump();
  return () => sent;
}
