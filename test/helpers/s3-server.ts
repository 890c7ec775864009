// Test helper: a real S3-compatible server (s3rver) on loopback, behind a thin proxy that checks SigV4 signatures and
// injects what s3rver cannot do itself: bucket regions as AWS reports them, denied writes, and the bookkeeping of
// multipart uploads (AbortMultipartUpload, ListMultipartUploads, NoSuchUpload for an aborted one).
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, createServer, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';

/** The part of s3rver's API the helper uses (the package ships no types). */
interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
  readonly httpServer?: { closeAllConnections(): void };
}
type S3rverClass = new (options: {
  address: string;
  port: number;
  silent: boolean;
  directory: string;
  configureBuckets: { name: string }[];
}) => S3rverInstance;

/** s3rver's one built-in account: it knows this access key id and answers InvalidAccessKeyId for any other. */
export const S3RVER_ACCESS_KEY_ID = 'S3RVER';

/** What the server holds and which S3 behaviours it adds on top of s3rver. */
export interface S3ServerOptions {
  /** Buckets that exist from the start. */
  readonly buckets?: readonly string[];
  /**
   * Secret key of the S3RVER access key: requests signed with another secret are answered 403 SignatureDoesNotMatch
   * (s3rver itself does not verify SigV4 signatures). Default: a random one.
   */
  readonly secretAccessKey?: string;
  /**
   * The region every bucket is in, reported the way AWS does: `x-amz-bucket-region` on HeadBucket, the
   * LocationConstraint of GetBucketLocation, and for requests signed for another region 301 (HEAD) or 400
   * AuthorizationHeaderMalformed. Default: none, like s3rver (empty LocationConstraint, no header).
   */
  readonly region?: string;
  /**
   * Writes (PutObject, multipart) to keys for which this returns true are answered 403 AccessDenied. A promise delays
   * the answer until it settles (a test orders a denial after other requests).
   */
  readonly denyWrite?: (bucket: string, key: string) => boolean | Promise<boolean>;
  /**
   * ListObjectsV2 answers at most this many keys per page, with IsTruncated and a NextContinuationToken, as S3 does at
   * 1,000, so that a client's paging is tested on a handful of objects. The proxy pages itself (continuation token:
   * the last key, base64url; s3rver gets start-after): s3rver's own tokens need DES, which OpenSSL 3 no longer has.
   * Default: s3rver's listing as it is (up to 1,000 keys, one page).
   */
  readonly listPageSize?: number;
}

/** A multipart upload created and neither completed nor aborted: what S3 keeps, and bills, until it is aborted. */
export interface IncompleteUpload {
  readonly bucket: string;
  readonly key: string;
  readonly uploadId: string;
}

/** One request the proxy saw. `operation` is derived from method, path and query. */
export interface S3Request {
  readonly method: string;
  readonly bucket: string;
  readonly key: string;
  readonly query: string;
  readonly operation: string;
}

/** A running server; `close()` it in `after`. */
export interface S3Server {
  /** `http://127.0.0.1:PORT`, for `endpoint` options (path-style). */
  readonly endpoint: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly requests: S3Request[];
  /** Called after an object write completed (PutObject or CompleteMultipartUpload answered 200 and was sent). */
  onObjectWritten: ((bucket: string, key: string) => void) | undefined;
  /**
   * Called when s3rver has answered a request, before the answer goes to the client, which waits until the returned
   * promise settles: a test holds a reply that way (the server has acted, the client does not know yet).
   * `clientGone` resolves if the client closes the connection meanwhile (the answer is then dropped).
   */
  beforeReply: ((request: S3Request, clientGone: Promise<void>) => Promise<void> | void) | undefined;
  /** The multipart uploads created through this server and neither completed nor aborted, by key. */
  incompleteUploads(bucket?: string): IncompleteUpload[];
  /** A client for this server: path-style, checksums only when required (as S3-compatible servers need). */
  client(overrides?: { accessKeyId?: string; secretAccessKey?: string; region?: string }): S3Client;
  /** The bytes of an object, or undefined when it does not exist. */
  getObject(bucket: string, key: string): Promise<Buffer | undefined>;
  /** The user metadata (`x-amz-meta-*`) of an object. */
  headMetadata(bucket: string, key: string): Promise<Record<string, string>>;
  /** Every key under a prefix, sorted. */
  listKeys(bucket: string, prefix?: string): Promise<string[]>;
  close(): Promise<void>;
}

/** RFC 3986 percent-encoding, as SigV4 canonicalises query strings. */
function encodeRfc3986(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function hmac(key: Buffer | string, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

interface ParsedAuth {
  readonly accessKeyId: string;
  readonly date: string;
  readonly region: string;
  readonly service: string;
  readonly signedHeaders: readonly string[];
  readonly signature: string;
}

function parseAuthorization(header: string | undefined): ParsedAuth | undefined {
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(
    header ?? '',
  );
  if (!m) return undefined;
  return {
    accessKeyId: m[1] ?? '',
    date: m[2] ?? '',
    region: m[3] ?? '',
    service: m[4] ?? '',
    signedHeaders: (m[5] ?? '').split(';'),
    signature: m[6] ?? '',
  };
}

/** Recomputes the SigV4 signature of an incoming request with `secret` (payload hash taken from x-amz-content-sha256). */
function expectedSignature(req: IncomingMessage, auth: ParsedAuth, secret: string): string {
  const [rawPath = '/', rawQuery = ''] = (req.url ?? '/').split(/\?(.*)/s, 2);
  const query = rawQuery
    .split('&')
    .filter((p) => p !== '')
    .map((p) => {
      const i = p.indexOf('=');
      const k = decodeURIComponent(i < 0 ? p : p.slice(0, i));
      const v = i < 0 ? '' : decodeURIComponent(p.slice(i + 1));
      return [encodeRfc3986(k), encodeRfc3986(v)] as const;
    })
    .sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const headers = auth.signedHeaders
    .map((h) => {
      const v = req.headers[h];
      const value = Array.isArray(v) ? v.join(',') : (v ?? '');
      return `${h}:${value.trim().replace(/\s+/g, ' ')}\n`;
    })
    .join('');
  const payloadHash = String(req.headers['x-amz-content-sha256'] ?? 'UNSIGNED-PAYLOAD');
  const canonical = [req.method, rawPath, query, headers, auth.signedHeaders.join(';'), payloadHash].join('\n');
  const scope = `${auth.date}/${auth.region}/${auth.service}/aws4_request`;
  const amzDate = String(req.headers['x-amz-date'] ?? '');
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, createHash('sha256').update(canonical, 'utf8').digest('hex')].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${secret}`, auth.date), auth.region), auth.service), 'aws4_request');
  return createHmac('sha256', key).update(toSign, 'utf8').digest('hex');
}

function xmlEscape(s: string): string {
  return s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Answers an S3 error the way S3 does: XML body (none for HEAD), after reading the request body. */
async function sendError(req: IncomingMessage, res: ServerResponse, status: number, code: string, message: string, extra: Record<string, string> = {}, headers: OutgoingHttpHeaders = {}): Promise<void> {
  req.resume();
  if (!req.readableEnded) await once(req, 'end');
  const body =
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message>` +
    Object.entries(extra).map(([k, v]) => `<${k}>${xmlEscape(v)}</${k}>`).join('') +
    `<RequestId>${randomBytes(8).toString('hex').toUpperCase()}</RequestId></Error>`;
  res.writeHead(status, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body), ...headers });
  res.end(req.method === 'HEAD' ? undefined : body);
}

function operationOf(method: string, bucket: string, key: string, params: URLSearchParams): string {
  if (bucket === '') return 'ListBuckets';
  if (key === '') {
    if (method === 'HEAD') return 'HeadBucket';
    if (method === 'GET') return params.has('location') ? 'GetBucketLocation' : params.has('uploads') ? 'ListMultipartUploads' : 'ListObjects';
    if (method === 'PUT') return 'CreateBucket';
    if (method === 'DELETE') return 'DeleteBucket';
    return `${method}Bucket`;
  }
  if (method === 'PUT') return params.has('uploadId') ? 'UploadPart' : 'PutObject';
  if (method === 'POST') return params.has('uploads') ? 'CreateMultipartUpload' : params.has('uploadId') ? 'CompleteMultipartUpload' : 'PostObject';
  if (method === 'GET') return 'GetObject';
  if (method === 'HEAD') return 'HeadObject';
  if (method === 'DELETE') return params.has('uploadId') ? 'AbortMultipartUpload' : 'DeleteObject';
  return method;
}

/**
 * Answers a ListObjectsV2 request one page of `listPageSize` keys at a time: asks s3rver for every key after the
 * continuation token (start-after) and cuts its answer to one page, adding IsTruncated and NextContinuationToken.
 */
async function pageListing(
  req: IncomingMessage,
  res: ServerResponse,
  options: S3ServerOptions & { listPageSize: number },
  port: number,
  headers: OutgoingHttpHeaders,
  agent: Agent,
  url: URL,
): Promise<void> {
  req.resume();
  const params = new URLSearchParams(url.searchParams);
  const token = params.get('continuation-token');
  params.delete('continuation-token');
  params.delete('max-keys');
  if (token !== null) params.set('start-after', Buffer.from(token, 'base64url').toString('utf8'));
  const up = httpRequest({ host: '127.0.0.1', port, method: 'GET', path: `${url.pathname}?${params}`, headers, agent });
  up.end();
  const [upRes] = (await once(up, 'response')) as [IncomingMessage];
  const chunks: Buffer[] = [];
  for await (const chunk of upRes) chunks.push(chunk as Buffer);
  let body = Buffer.concat(chunks).toString('utf8');
  const contents = body.match(/<Contents>[\s\S]*?<\/Contents>/g) ?? [];
  if (upRes.statusCode === 200 && /<IsTruncated>false<\/IsTruncated>/.test(body)) {
    const size = Math.min(options.listPageSize, Number(url.searchParams.get('max-keys') ?? 1000));
    const kept = contents.slice(0, size);
    const last = /<Key>([\s\S]*?)<\/Key>/.exec(kept.at(-1) ?? '')?.[1];
    const truncated = contents.length > size && last !== undefined;
    const decoded = (last ?? '').replace(/&(lt|gt|amp|quot|apos|#\d+);/g, (e, name: string) =>
      name.startsWith('#') ? String.fromCharCode(Number(name.slice(1))) : ({ lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" } as Record<string, string>)[name] ?? e);
    body = body
      .replace(/<Contents>[\s\S]*<\/Contents>/, () => kept.join(""))
      .replace(/<KeyCount>\d+<\/KeyCount>/, `<KeyCount>${kept.length}</KeyCount>`)
      .replace(/<MaxKeys>\d+<\/MaxKeys>/, `<MaxKeys>${size}</MaxKeys>`)
      .replace('<IsTruncated>false</IsTruncated>', truncated
        ? `<IsTruncated>true</IsTruncated><NextContinuationToken>${Buffer.from(decoded, 'utf8').toString('base64url')}</NextContinuationToken>`
        : '<IsTruncated>false</IsTruncated>')
      .replace(/<StartAfter>[\s\S]*?<\/StartAfter>/, token === null ? '$&' : `<ContinuationToken>${xmlEscape(token)}</ContinuationToken>`);
  }
  res.writeHead(upRes.statusCode ?? 502, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * Starts s3rver on 127.0.0.1 (ephemeral port, files in a temp folder) behind a loopback proxy that verifies SigV4
 * signatures of the S3RVER key against `secretAccessKey` and adds the behaviours in {@link S3ServerOptions}.
 *
 * @example
 * const s3 = await startS3Server({ buckets: ['pneumotype-test'] });
 * try { await upload({ data, bucket: 'pneumotype-test', client: s3.client() }) } finally { await s3.close() }
 */
export async function startS3Server(options: S3ServerOptions = {}): Promise<S3Server> {
  const S3rver = createRequire(import.meta.url)('s3rver') as S3rverClass;
  const directory = await mkdtemp(join(tmpdir(), 'pneumotype-s3rver-'));
  const s3rver = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    configureBuckets: (options.buckets ?? []).map((name) => ({ name })),
  });
  const upstream = await s3rver.run();
  const secretAccessKey = options.secretAccessKey ?? randomBytes(20).toString('base64url');
  const requests: S3Request[] = [];
  const clients: S3Client[] = [];
  // s3rver keeps parts in a folder per upload and answers neither AbortMultipartUpload nor ListMultipartUploads:
  // the proxy keeps the uploads it saw created and not yet completed or aborted, and answers those itself.
  const uploads = new Map<string, IncompleteUpload>();
  const agent = new Agent({ keepAlive: false });

  async function handle(req: IncomingMessage, res: ServerResponse, server: S3Server): Promise<void> {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const [, bucketPart = '', ...keyParts] = url.pathname.split('/');
    const bucket = decodeURIComponent(bucketPart);
    const key = decodeURIComponent(keyParts.join('/'));
    const operation = operationOf(method, bucket, key, url.searchParams);
    const request: S3Request = { method, bucket, key, query: url.search, operation };
    requests.push(request);

    const auth = parseAuthorization(req.headers.authorization);
    if (auth && auth.accessKeyId === S3RVER_ACCESS_KEY_ID) {
      const expected = Buffer.from(expectedSignature(req, auth, secretAccessKey));
      const given = Buffer.from(auth.signature);
      if (expected.length !== given.length || !timingSafeEqual(expected, given)) {
        await sendError(req, res, 403, 'SignatureDoesNotMatch',
          'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
          { AWSAccessKeyId: auth.accessKeyId });
        return;
      }
    }
    if (options.region !== undefined && bucket !== '') {
      if (auth && auth.region !== options.region) {
        if (method === 'HEAD') {
          await sendError(req, res, 301, 'PermanentRedirect', 'Moved Permanently', {}, { 'x-amz-bucket-region': options.region });
        } else {
          await sendError(req, res, 400, 'AuthorizationHeaderMalformed',
            `The authorization header is malformed; the region '${auth.region}' is wrong; expecting '${options.region}'`,
            { Region: options.region }, { 'x-amz-bucket-region': options.region });
        }
        return;
      }
      if (operation === 'GetBucketLocation') {
        req.resume();
        const body = `<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/">${
          options.region === 'us-east-1' ? '' : xmlEscape(options.region)
        }</LocationConstraint>`;
        res.writeHead(200, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
        return;
      }
    }
    const writes = ['PutObject', 'UploadPart', 'CreateMultipartUpload', 'CompleteMultipartUpload'];
    if (writes.includes(operation) && (await options.denyWrite?.(bucket, key))) {
      await sendError(req, res, 403, 'AccessDenied', 'Access Denied');
      return;
    }

    if (operation === 'ListMultipartUploads') {
      req.resume();
      const prefix = url.searchParams.get('prefix') ?? '';
      const listed = [...uploads.values()]
        .filter((u) => u.bucket === bucket && u.key.startsWith(prefix))
        .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      const body =
        '<?xml version="1.0" encoding="UTF-8"?>\n<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
        `<Bucket>${xmlEscape(bucket)}</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker><Prefix>${xmlEscape(prefix)}</Prefix>` +
        '<MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>' +
        listed.map((u) => `<Upload><Key>${xmlEscape(u.key)}</Key><UploadId>${u.uploadId}</UploadId><StorageClass>STANDARD</StorageClass></Upload>`).join('') +
        '</ListMultipartUploadsResult>';
      res.writeHead(200, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    const uploadId = url.searchParams.get('uploadId');
    if (uploadId !== null && ['UploadPart', 'CompleteMultipartUpload', 'AbortMultipartUpload'].includes(operation)) {
      const known = uploads.get(uploadId);
      if (known === undefined || known.bucket !== bucket || known.key !== key) {
        await sendError(req, res, 404, 'NoSuchUpload',
          'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
          { UploadId: uploadId });
        return;
      }
      if (operation === 'AbortMultipartUpload') {
        uploads.delete(uploadId);
        req.resume();
        res.writeHead(204);
        res.end();
        return;
      }
    }

    const headers = { ...req.headers };
    delete headers.expect; // this proxy already answered 100-continue; the body follows without waiting
    const page = options.listPageSize !== undefined && operation === 'ListObjects' && url.searchParams.get('list-type') === '2';
    if (page) {
      await pageListing(req, res, { ...options, listPageSize: options.listPageSize ?? 1000 }, upstream.port, headers, agent, url);
      return;
    }
    const up = httpRequest({ host: '127.0.0.1', port: upstream.port, method, path: req.url, headers, agent });
    req.pipe(up);
    res.on('close', () => {
      if (!res.writableFinished) up.destroy(); // the client gave up: so does the request to s3rver
    });
    const [upRes] = (await once(up, 'response')) as [IncomingMessage];
    const out: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(upRes.headers)) {
      if (value !== undefined && !['connection', 'keep-alive', 'transfer-encoding'].includes(name)) out[name] = value;
    }
    if (options.region !== undefined && operation === 'HeadBucket') out['x-amz-bucket-region'] = options.region;
    const hold = server.beforeReply;
    let body: Buffer | undefined;
    if (hold !== undefined || operation === 'CreateMultipartUpload' || operation === 'CompleteMultipartUpload') {
      const chunks: Buffer[] = [];
      for await (const chunk of upRes) chunks.push(chunk as Buffer);
      body = Buffer.concat(chunks);
      if (upRes.statusCode === 200 && operation === 'CreateMultipartUpload') {
        const id = /<UploadId>([^<]+)<\/UploadId>/.exec(body.toString('utf8'))?.[1];
        if (id !== undefined) uploads.set(id, { bucket, key, uploadId: id });
      }
      if (upRes.statusCode === 200 && operation === 'CompleteMultipartUpload' && uploadId !== null) uploads.delete(uploadId);
    }
    if (hold !== undefined) {
      const clientGone = new Promise<void>((resolve) => res.once('close', () => resolve()));
      await hold(request, clientGone);
      if (res.destroyed) return; // the client gave up while the reply was held: S3 acted all the same
    }
    res.writeHead(upRes.statusCode ?? 502, out);
    if (body !== undefined) res.end(body);
    else upRes.pipe(res);
    await once(res, 'finish');
    if (upRes.statusCode === 200 && (operation === 'PutObject' || operation === 'CompleteMultipartUpload')) {
      server.onObjectWritten?.(bucket, key);
    }
  }

  let self: S3Server | undefined;
  const proxy = createServer((req, res) => {
    handle(req, res, self as S3Server).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(502);
      res.destroy(err instanceof Error ? err : new Error(String(err)));
    });
  });
  await new Promise<void>((resolve, reject) => {
    proxy.once('error', reject);
    proxy.listen(0, '127.0.0.1', () => resolve());
  });
  const endpoint = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;

  const makeClient = (overrides: { accessKeyId?: string; secretAccessKey?: string; region?: string } = {}): S3Client => {
    const client = new S3Client({
      region: overrides.region ?? options.region ?? 'us-east-1',
      endpoint,
      forcePathStyle: true,
      credentials: {
        accessKeyId: overrides.accessKeyId ?? S3RVER_ACCESS_KEY_ID,
        secretAccessKey: overrides.secretAccessKey ?? secretAccessKey,
      },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 1,
    });
    clients.push(client);
    return client;
  };
  let admin: S3Client | undefined;
  const adminClient = (): S3Client => (admin ??= makeClient());

  self = {
    endpoint,
    accessKeyId: S3RVER_ACCESS_KEY_ID,
    secretAccessKey,
    requests,
    onObjectWritten: undefined,
    beforeReply: undefined,
    incompleteUploads(bucket) {
      return [...uploads.values()]
        .filter((u) => bucket === undefined || u.bucket === bucket)
        .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.uploadId < b.uploadId ? -1 : 1));
    },
    client: makeClient,
    async getObject(bucket, key) {
      try {
        const r = await adminClient().send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        return Buffer.from((await r.Body?.transformToByteArray()) ?? []);
      } catch (err) {
        if ((err as { name?: string }).name === 'NoSuchKey') return undefined;
        throw err;
      }
    },
    async headMetadata(bucket, key) {
      return (await adminClient().send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).Metadata ?? {};
    },
    async listKeys(bucket, prefix) {
      const keys: string[] = [];
      let token: string | undefined;
      do {
        const page = await adminClient().send(
          new ListObjectsV2Command({ Bucket: bucket, ...(prefix ? { Prefix: prefix } : {}), ...(token ? { ContinuationToken: token } : {}) }),
        );
        for (const o of page.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key);
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return keys.sort();
    },
    async close() {
      for (const c of clients) c.destroy();
      await new Promise<void>((resolve, reject) => {
        proxy.close((err) => (err ? reject(err) : resolve()));
        proxy.closeAllConnections();
      });
      agent.destroy();
      const closing = s3rver.close();
      s3rver.httpServer?.closeAllConnections();
      await closing;
      await rm(directory, { recursive: true, force: true });
    },
  };
  return self;
}
