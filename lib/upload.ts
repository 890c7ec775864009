// The upload step: the labelled dataset folder to S3, resumable by size and MD5, with a manifest object written last.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { setMaxListeners } from 'node:events';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, posix, relative, sep } from 'node:path';
import { Transform, pipeline, type TransformCallback } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetBucketLocationCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { DEFAULTS } from './config.js';
import { ConfigError, IntegrityError, LabelError, messageOf, PneumotypeError, quote, type ErrorDetails } from './errors.js';
import { MANIFEST_FILE, readManifest } from './manifest.js';
import { mapPool } from './pool.js';
import { ProgressTracker, type ProgressCallback } from './progress.js';

/** Name of the object, under the prefix, that marks an upload complete and lists every file in it. */
export const UPLOAD_MANIFEST_NAME = '_pneumotype-upload.json';
/** The relabel step's summary file, uploaded with the dataset and read for the counts in the manifest object. */
const SUMMARY_FILE = 'summary.json';
/** S3's limits on multipart part sizes. */
export const MIN_PART_SIZE = 5 * 1024 ** 2;
export const MAX_PART_SIZE = 5 * 1024 ** 3;

/** Defaults of the upload step, from DEFAULTS in lib/config.ts. */
export const UPLOAD_DEFAULTS = {
  concurrency: DEFAULTS.uploadConcurrency,
  partSize: DEFAULTS.uploadPartSize,
  prefix: DEFAULTS.uploadPrefix,
} as const;

/** Parts of one multipart file uploaded at once. */
const PART_QUEUE = 2;
/**
 * After an abort or a failure, how long the upload still waits for the answers that let it abort its multipart
 * uploads (CreateMultipartUpload's UploadId, AbortMultipartUpload, ListMultipartUploads) before it gives up on them.
 */
const CLEANUP_MS = 15_000;

/** Why an upload failed, for programs that react differently (the message says it for people). */
export type UploadFailure = 'credentials' | 'no-bucket' | 'denied' | 'region' | 'aborted' | 'failed';

/** An S3 upload that failed: credentials, a missing bucket, a denied request, the wrong region, an abort. */
export class UploadError extends PneumotypeError {
  readonly bucket: string;
  readonly key: string | undefined;
  readonly reason: UploadFailure;
  constructor(message: string, details: ErrorDetails & { bucket: string; key?: string; reason: UploadFailure }) {
    super('ERR_UPLOAD', message, { ...details, path: details.path ?? s3Url(details.bucket, details.key ?? '') });
    this.bucket = details.bucket;
    this.key = details.key;
    this.reason = details.reason;
  }
}

/**
 * How the caller lets its user set each upload setting, for the hints in error messages: a command-line flag
 * (`--region`: "pass --region eu-west-1") or an environment variable (`AWS_REGION`: "set AWS_REGION=eu-west-1").
 */
export interface UploadSettingNames {
  readonly bucket: string;
  readonly prefix: string;
  readonly region: string;
  readonly endpoint: string;
  /** Absent where the caller sets no concurrency (the notebooks): the CLI's flag is named then. */
  readonly concurrency?: string;
  /** How the user makes the labelled folder again: "`pneumotype relabel`", or "notebook 02-three-labels". */
  readonly relabel: string;
}

/** The CLI's flags: what {@link upload}'s messages name unless `settingNames` says otherwise. */
export const CLI_SETTING_NAMES: UploadSettingNames = Object.freeze({
  bucket: '--bucket', prefix: '--prefix', region: '--region', endpoint: '--endpoint', concurrency: '--concurrency',
  relabel: '`pneumotype relabel`',
});

const isFlag = (name: string): boolean => name.startsWith('-');
/** "pass --region" or "set AWS_REGION". */
const giveIt = (name: string): string => (isFlag(name) ? `pass ${name}` : `set ${name}`);
/** "pass --region eu-west-1" or "set AWS_REGION=eu-west-1". */
const giveValue = (name: string, value: string): string => (isFlag(name) ? `pass ${name} ${value}` : `set ${name}=${value}`);
/** "another --bucket or --prefix", or "another bucket or prefix (PNEUMOTYPE_S3_BUCKET, PNEUMOTYPE_S3_PREFIX)". */
function another(settings: ReadonlyArray<readonly [name: string, what: string]>): string {
  const names = settings.map(([name]) => name);
  return names.every(isFlag) ? `another ${names.join(' or ')}` : `another ${settings.map(([, what]) => what).join(' or ')} (${names.join(', ')})`;
}

export interface UploadOptions {
  /** The labelled dataset folder (DEFAULTS.labeledDir): manifest.csv, summary.json, the images, rejected/. */
  readonly data?: string;
  readonly bucket: string;
  /** Key prefix, without leading or trailing slash (UPLOAD_DEFAULTS.prefix: the bucket's root). */
  readonly prefix?: string;
  /** Region the upload targets; the bucket must be in it. Default: the client's region (AWS_REGION, the profile). */
  readonly region?: string;
  /** An S3-compatible endpoint (path-style addressing is used). Ignored when `client` is given. */
  readonly endpoint?: string;
  /** A ready client (tests, custom credentials). Default: one built from region/endpoint and the SDK's default chain. */
  readonly client?: S3Client;
  /** Files uploaded at once (UPLOAD_DEFAULTS.concurrency). */
  readonly concurrency?: number;
  /** Multipart part size in bytes, 5 MiB to 5 GiB (UPLOAD_DEFAULTS.partSize); larger files go multipart. */
  readonly partSize?: number;
  /**
   * How long one request may stay silent before that attempt fails (DEFAULTS.uploadRequestTimeoutMs); the SDK tries
   * three times. Ignored when `client` is given, as is connectTimeoutMs (DEFAULTS.uploadConnectTimeoutMs).
   */
  readonly requestTimeoutMs?: number;
  readonly connectTimeoutMs?: number;
  readonly onProgress?: ProgressCallback;
  readonly signal?: AbortSignal;
  /** How error messages name the settings (default {@link CLI_SETTING_NAMES}; the notebooks name their environment variables). */
  readonly settingNames?: UploadSettingNames;
}

/** A local file of the dataset, hashed. */
export interface LocalFile {
  /** Path relative to the dataset folder, posix separators: `train/virus/person1_virus_6.jpeg`. */
  readonly file: string;
  /** Path on disk. */
  readonly path: string;
  readonly bytes: number;
  /** Lowercase hex. */
  readonly md5: string;
  readonly sha256: string;
}

/** What the bucket holds at a key (from ListObjectsV2, completed by HeadObject where needed). */
export interface RemoteObject {
  readonly key: string;
  readonly bytes: number;
  /** The ETag without quotes: the MD5 hex for single-part unencrypted objects, something else for multipart. */
  readonly etag: string | undefined;
  readonly lastModified: string | undefined;
  /** `x-amz-meta-md5`, which this module stores on every object it writes ('' when HeadObject found none). */
  readonly md5?: string;
  /** HeadObject's server-side encryption ('none' when it reported none); undefined before HeadObject. */
  readonly encryption?: string;
}

/** One file of a completed upload, as listed in the manifest object. */
export interface UploadedFile {
  readonly key: string;
  readonly file: string;
  readonly bytes: number;
  readonly md5: string;
  readonly sha256: string;
  /** When the object was completed in the bucket (ISO 8601). */
  readonly completedAt: string;
}

/** The manifest object `<prefix>/_pneumotype-upload.json`: present only once every file is in the bucket. */
export interface UploadManifest {
  readonly format: 'pneumotype-upload';
  readonly version: 1;
  readonly bucket: string;
  readonly prefix: string;
  readonly region: string | undefined;
  readonly completedAt: string;
  readonly totals: { readonly files: number; readonly bytes: number };
  /** Counts from the dataset's summary.json: images and patients per split and label. */
  readonly summary: { readonly counts: unknown; readonly patients: unknown };
  readonly files: readonly UploadedFile[];
}

export interface UploadResult {
  readonly bucket: string;
  readonly prefix: string;
  /** The bucket's region as the server reported it (undefined when it reports none, like some S3-compatible servers). */
  readonly region: string | undefined;
  readonly manifestKey: string;
  /** Files sent this run. */
  readonly uploaded: number;
  /** Files already in the bucket with the same size and MD5. */
  readonly skipped: number;
  /** Bytes sent this run. */
  readonly bytes: number;
  readonly skippedBytes: number;
  readonly totalBytes: number;
  /** False when the manifest object already listed exactly these files and was kept. */
  readonly manifestWritten: boolean;
  /** Objects under the prefix that are not part of this dataset (left alone). */
  readonly otherObjects: number;
  readonly manifest: UploadManifest;
}

/** What to do with each local file, given what the bucket holds. */
export interface UploadPlan {
  /** Missing from the bucket, or with another size or MD5. */
  readonly upload: readonly LocalFile[];
  /** Same size and an ETag equal to the MD5: already there. */
  readonly skip: readonly { readonly local: LocalFile; readonly remote: RemoteObject }[];
  /**
   * Same size but an ETag that is not the MD5: HeadObject tells multipart and SSE-KMS objects (`x-amz-meta-md5`
   * decides) from changed ones (the single-part ETag of an object without SSE-KMS is its MD5).
   */
  readonly verify: readonly { readonly local: LocalFile; readonly remote: RemoteObject }[];
}

/** `s3://bucket/key`. */
function s3Url(bucket: string, key: string): string {
  return `s3://${bucket}/${key}`;
}

/**
 * Checks a key prefix and returns it without leading or trailing slashes ('' for the bucket's root).
 *
 * @example normalizePrefix('/datasets/chest-xray/') // 'datasets/chest-xray'
 */
export function normalizePrefix(prefix: string, names: UploadSettingNames = CLI_SETTING_NAMES): string {
  const trimmed = prefix.replace(/^\/+|\/+$/g, '');
  if (trimmed === '') return '';
  if (trimmed.includes('\\') || trimmed.split('/').some((s) => s === '' || s === '.' || s === '..')) {
    throw new ConfigError(`prefix ${quote(prefix)} has an empty, "." or ".." segment or a backslash: ${giveIt(names.prefix)} like "datasets/chest-xray"`);
  }
  return trimmed;
}

/**
 * The object key of a dataset file under a (normalised) prefix.
 *
 * @example objectKey('datasets/v2', 'train/virus/person1_virus_6.jpeg') // 'datasets/v2/train/virus/person1_virus_6.jpeg'
 */
export function objectKey(prefix: string, file: string): string {
  return prefix === '' ? file : `${prefix}/${file}`;
}

/**
 * The region a GetBucketLocation LocationConstraint names: empty means us-east-1, "EU" is eu-west-1's old name.
 *
 * @example bucketRegionFrom('') // 'us-east-1'
 */
export function bucketRegionFrom(locationConstraint: string | undefined | null): string {
  if (locationConstraint === undefined || locationConstraint === null || locationConstraint === '') return 'us-east-1';
  if (locationConstraint === 'EU') return 'eu-west-1';
  return locationConstraint;
}

/**
 * Throws when the bucket is in another region than the upload targets (nothing to check when the server reports none).
 *
 * @example checkBucketRegion({ bucket: 'scans', bucketRegion: 'eu-west-1', targetRegion: 'eu-west-1' })
 */
export function checkBucketRegion(options: {
  bucket: string;
  bucketRegion: string | undefined;
  targetRegion: string;
  cause?: unknown;
  settingNames?: UploadSettingNames;
}): void {
  const { bucket, bucketRegion, targetRegion } = options;
  if (bucketRegion === undefined || bucketRegion === targetRegion) return;
  throw new UploadError(
    `bucket ${quote(bucket)} is in ${quote(bucketRegion)} but the upload targets ${quote(targetRegion)}: the narrative keeps data ` +
      `in the region the model is deployed to; ${giveValue((options.settingNames ?? CLI_SETTING_NAMES).region, bucketRegion)} or use another bucket`,
    { bucket, reason: 'region', ...(options.cause !== undefined ? { cause: options.cause } : {}) },
  );
}

/**
 * Decides, without any request, which files to upload, which are already there and which need their
 * `x-amz-meta-md5` read. `remote` is keyed by object key.
 *
 * @example const plan = planUpload({ prefix: 'v2', files, remote: new Map() }) // plan.upload: every file
 */
export function planUpload(options: { prefix: string; files: readonly LocalFile[]; remote: ReadonlyMap<string, RemoteObject> }): UploadPlan {
  const upload: LocalFile[] = [];
  const skip: { local: LocalFile; remote: RemoteObject }[] = [];
  const verify: { local: LocalFile; remote: RemoteObject }[] = [];
  for (const local of options.files) {
    const remote = options.remote.get(objectKey(options.prefix, local.file));
    if (remote === undefined || remote.bytes !== local.bytes) upload.push(local);
    else if (remote.etag === local.md5) skip.push({ local, remote });
    else if (remote.md5 === undefined) verify.push({ local, remote });
    // An ETag known to be the content's MD5 outranks x-amz-meta-md5, which is only what a writer claimed.
    else if (remote.md5 === local.md5 && !etagIsContentMd5(remote)) skip.push({ local, remote });
    else upload.push(local);
  }
  return { upload, skip, verify };
}

/**
 * True when the object's ETag is the MD5 of its bytes: a single-part ETag (32 hex digits) of an object HeadObject
 * found unencrypted or encrypted with S3's own keys (SSE-KMS ETags are not the MD5, multipart ones carry a "-N").
 */
function etagIsContentMd5(remote: RemoteObject): boolean {
  return remote.encryption !== undefined && !remote.encryption.startsWith('aws:kms') && /^[0-9a-f]{32}$/.test(remote.etag ?? '');
}

const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/**
 * Checks the options of {@link upload} before any work (the CLI turns its ConfigError into a usage error): bucket
 * name, region, concurrency, part size, endpoint and prefix.
 *
 * @example checkUploadOptions({ data: 'data/labeled', bucket: 'my-bucket', prefix: '/datasets/v2/' }).prefix // "datasets/v2"
 */
export function checkUploadOptions(options: UploadOptions): { prefix: string; concurrency: number; partSize: number } {
  const names = options.settingNames ?? CLI_SETTING_NAMES;
  // An empty region would reach the SDK, whose "Region is missing" names no option. S3-compatible servers (an
  // endpoint, given or from the environment as the SDK reads it) may name their regions as they like.
  const aws = (options.endpoint ?? environmentEndpoint()) === undefined;
  const region = aws ? /^[a-z]{2,}(-[a-z0-9]+)+-\d+$/ : /^[A-Za-z0-9_.-]+$/;
  if (options.region !== undefined && !region.test(options.region)) {
    throw new ConfigError(`region ${quote(options.region)} is not ${aws ? 'an AWS region name' : 'a region name'}: ${giveIt(names.region)} like "eu-west-1"`);
  }
  if (!BUCKET_NAME.test(options.bucket)) {
    throw new ConfigError(
      `bucket ${quote(options.bucket)} is not a valid S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens, ` +
        `starting and ending with a letter or digit): ${giveValue(names.bucket, 'NAME')}`,
    );
  }
  const concurrency = options.concurrency ?? UPLOAD_DEFAULTS.concurrency;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new ConfigError(`concurrency ${quote(concurrency)} is not a positive integer: ${giveValue(names.concurrency ?? '--concurrency', '4')} or so`);
  }
  const partSize = options.partSize ?? UPLOAD_DEFAULTS.partSize;
  if (!Number.isInteger(partSize) || partSize < MIN_PART_SIZE || partSize > MAX_PART_SIZE) {
    throw new ConfigError(
      `part size ${quote(partSize)} is outside S3's limits for multipart parts (${MIN_PART_SIZE} to ${MAX_PART_SIZE} bytes, 5 MiB to 5 GiB)`,
    );
  }
  if (options.endpoint !== undefined && options.client === undefined) {
    let url: URL | undefined;
    try {
      url = new URL(options.endpoint);
    } catch {
      url = undefined;
    }
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      throw new ConfigError(`endpoint ${quote(endpointLabel(options.endpoint))} is not an http(s) URL: ${giveIt(names.endpoint)} like "http://127.0.0.1:9000"`);
    }
  }
  return { prefix: normalizePrefix(options.prefix ?? UPLOAD_DEFAULTS.prefix, names), concurrency, partSize };
}

/** An endpoint for messages: without user info (never print credentials embedded in a URL). */
function endpointLabel(endpoint: string): string {
  try {
    const url = new URL(endpoint);
    url.username = '';
    url.password = '';
    return url.href.replace(/\/$/, '');
  } catch {
    return endpoint.replace(/\/\/[^/@]*@/, '//');
  }
}

function contentType(file: string): string {
  const ext = posix.extname(file).toLowerCase();
  if (ext === '.jpeg' || ext === '.jpg') return 'image/jpeg';
  if (ext === '.png') return 'image/png';
  if (ext === '.csv') return 'text/csv';
  if (ext === '.json') return 'application/json';
  return 'application/octet-stream';
}

// ---------------------------------------------------------------------------------------------------------------
// Local files

/** A relative path that stays inside the dataset folder. */
function isSafeRelative(file: string): boolean {
  return file !== '' && !file.startsWith('/') && !file.includes('\\') && !file.split('/').some((s) => s === '' || s === '.' || s === '..');
}

async function listRejected(dir: string): Promise<string[]> {
  const root = join(dir, 'rejected');
  const s = await stat(root).catch(() => undefined);
  if (!s?.isDirectory()) return [];
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  const files: string[] = [];
  for (const e of entries) {
    if (!e.isFile() || e.name.endsWith('.part') || e.name.endsWith('.tmp')) continue;
    const parent = e.parentPath ?? (e as unknown as { path: string }).path;
    files.push(relative(dir, join(parent, e.name)).split(sep).join('/'));
  }
  return files.sort();
}

async function hashFile(path: string, onBytes: (n: number) => void, signal: AbortSignal): Promise<{ bytes: number; md5: string; sha256: string }> {
  const md5 = createHash('md5');
  const sha = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20, signal })) {
    const b = chunk as Buffer;
    md5.update(b);
    sha.update(b);
    bytes += b.length;
    onBytes(b.length);
  }
  return { bytes, md5: md5.digest('hex'), sha256: sha.digest('hex') };
}

/** The dataset folder as read before any hashing: files to upload with their sizes, what manifest.csv says. */
interface Dataset {
  readonly dir: string;
  readonly names: readonly string[];
  readonly sizes: readonly number[];
  readonly expected: ReadonlyMap<string, { readonly bytes: number; readonly sha256: string }>;
  readonly summary: UploadManifest['summary'];
}

/** Reads manifest.csv and summary.json and checks that every file to upload is there (cheap: no hashing). */
async function readDataset(dir: string, settingNames: UploadSettingNames): Promise<Dataset> {
  const rows = await readManifest(dir, { relabel: settingNames.relabel });
  const summaryPath = join(dir, SUMMARY_FILE);
  let summary: { counts?: unknown; patients?: unknown };
  try {
    summary = JSON.parse(await readFile(summaryPath, 'utf8')) as typeof summary;
  } catch (err) {
    throw new LabelError(`no readable summary at ${quote(summaryPath)}: relabel did not finish; run ${settingNames.relabel} first`, {
      path: summaryPath,
      cause: err,
    });
  }
  const expected = new Map<string, { bytes: number; sha256: string }>();
  for (const r of rows) {
    if (!isSafeRelative(r.file)) {
      throw new LabelError(`${quote(join(dir, MANIFEST_FILE))} lists ${quote(r.file)}, which is not a path inside the dataset folder`, {
        path: join(dir, MANIFEST_FILE),
      });
    }
    expected.set(r.file, { bytes: r.bytes, sha256: r.sha256 });
  }
  const names = [...new Set([...rows.map((r) => r.file), ...(await listRejected(dir)), MANIFEST_FILE, SUMMARY_FILE])];
  const sizes = await Promise.all(
    names.map(async (file) => {
      const path = join(dir, ...file.split('/'));
      const s = await stat(path).catch(() => undefined);
      if (!s?.isFile()) {
        throw new LabelError(`${quote(file)} is listed in ${quote(join(dir, MANIFEST_FILE))} but missing from ${quote(dir)}: run ${settingNames.relabel} again`, {
          path,
        });
      }
      return s.size;
    }),
  );
  return { dir, names, sizes, expected, summary: { counts: summary.counts ?? null, patients: summary.patients ?? null } };
}

/** Hashes every file (MD5 for S3, SHA-256 for the manifest object) and checks the images against manifest.csv. */
async function hashDataset(
  dataset: Dataset,
  concurrency: number,
  signal: AbortSignal,
  onProgress: ProgressCallback | undefined,
  names: UploadSettingNames,
): Promise<LocalFile[]> {
  const { dir, expected } = dataset;
  const tracker = new ProgressTracker({
    stage: 'hash',
    unit: 'bytes',
    total: dataset.sizes.reduce((a, b) => a + b, 0),
    onProgress,
    intervalMs: DEFAULTS.progressIntervalMs,
  });
  const files = await mapPool(dataset.names, concurrency, async (file) => {
    const path = join(dir, ...file.split('/'));
    const h = await hashFile(path, (n) => tracker.add(n), signal);
    const want = expected.get(file);
    if (want && (want.bytes !== h.bytes || want.sha256 !== h.sha256)) {
      throw new IntegrityError(
        `${quote(file)} in ${quote(dir)} does not match ${MANIFEST_FILE} (${h.bytes} bytes, sha256 ${h.sha256}; the manifest says ` +
          `${want.bytes} bytes, sha256 ${want.sha256}): the labelled folder changed after relabel; run ${names.relabel} again`,
        { path, expected: want.sha256, actual: h.sha256 },
      );
    }
    return { file, path, ...h };
  }, signal);
  tracker.finish();
  return files;
}


// ---------------------------------------------------------------------------------------------------------------
// S3 errors

interface SdkError {
  readonly name?: string;
  readonly message?: string;
  readonly Code?: string;
  readonly Region?: string;
  readonly $metadata?: { readonly httpStatusCode?: number };
  readonly $response?: { readonly headers?: Readonly<Record<string, string | undefined>> };
}

const CREDENTIAL_CODES = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken', 'TokenRefreshRequired', 'InvalidClientTokenId']);
const DENIED_CODES = new Set(['AccessDenied', 'AllAccessDisabled', 'AccountProblem', 'Forbidden']);
const REGION_CODES = new Set(['PermanentRedirect', 'AuthorizationHeaderMalformed', 'IllegalLocationConstraintException']);

function sdkCode(err: unknown): string {
  const e = (err ?? {}) as SdkError;
  return e.Code ?? e.name ?? 'Error';
}

/** Error codes of a request that got no answer: refused, unresolvable, cut or timed out (Node's and the SDK's). */
const UNANSWERED_CODES = new Set([
  'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'ECONNABORTED',
  'TimeoutError', 'RequestTimeout',
]);

/** Whether `err` is a request that got no answer at all (not an S3 answer, not a local file's error, not an abort). */
function unanswered(err: unknown): boolean {
  if (status(err) !== undefined) return false;
  const e = (err ?? {}) as { code?: unknown; name?: unknown };
  return UNANSWERED_CODES.has(String(e.code)) || UNANSWERED_CODES.has(String(e.name));
}

function status(err: unknown): number | undefined {
  return ((err ?? {}) as SdkError).$metadata?.httpStatusCode;
}

/** The region a redirect or a malformed-authorization answer names (S3 sends it in a header, and in the body). */
function regionOf(err: unknown): string | undefined {
  const e = (err ?? {}) as SdkError;
  return e.$response?.headers?.['x-amz-bucket-region'] ?? (e.Region !== undefined && e.Region !== '' ? e.Region : undefined);
}

function isAbort(err: unknown): boolean {
  return (err as { name?: string } | undefined)?.name === 'AbortError';
}

/** What an upload was doing when a request failed, for messages and the permission it needs. */
type Step =
  | { readonly kind: 'check' }
  | { readonly kind: 'list' }
  | { readonly kind: 'read'; readonly key: string }
  | { readonly kind: 'write'; readonly key: string }
  | { readonly kind: 'delete'; readonly key: string };

interface Target {
  readonly bucket: string;
  readonly prefix: string;
  readonly endpoint: string | undefined;
  readonly region: string;
  readonly manifestKey: string;
  /** The access key ID the client signs with, and where it came from (for a refusal's message; never the secret). */
  readonly key?: { readonly id: string; readonly from: string };
  readonly names: UploadSettingNames;
}

function prefixUrl(t: Target): string {
  return s3Url(t.bucket, t.prefix === '' ? '' : `${t.prefix}/`);
}

/**
 * The fields of an S3 error body that echo the request as signed (S3 sends them with SignatureDoesNotMatch): the
 * signature, the string signed and the canonical request, which holds a session token's value. The SDK copies them
 * onto its error, and PNEUMOTYPE_DEBUG would print the cause with them. `$response` (hidden: the raw answer, which
 * holds its body and the request as sent) goes with them.
 */
const ECHO_FIELDS = new Set(['SignatureProvided', 'StringToSign', 'StringToSignBytes', 'CanonicalRequest', 'CanonicalRequestBytes', '$response']);

/** The SDK's error without the {@link ECHO_FIELDS} (a copy with the same prototype, message and stack), else as it is. */
function withoutEcho(err: unknown): unknown {
  if (typeof err !== 'object' || err === null || !Object.keys(err).some((k) => ECHO_FIELDS.has(k))) return err;
  const copy = Object.create(Object.getPrototypeOf(err) as object) as object;
  for (const k of Reflect.ownKeys(err)) {
    const descriptor = Object.getOwnPropertyDescriptor(err, k);
    if (descriptor !== undefined && !(typeof k === 'string' && ECHO_FIELDS.has(k))) Object.defineProperty(copy, k, descriptor);
  }
  return copy;
}

/** The SDK error of an S3 request as an UploadError that names the bucket/key and what to do. */
function toUploadError(err: unknown, step: Step, t: Target): PneumotypeError {
  if (err instanceof PneumotypeError) return err;
  const code = sdkCode(err);
  const detail = `(${code}: ${((err ?? {}) as SdkError).message ?? String(err)})`;
  const key = step.kind === 'check' || step.kind === 'list' ? undefined : step.key;
  const where = step.kind === 'check' ? quote(s3Url(t.bucket, '')) : step.kind === 'list' ? quote(prefixUrl(t)) : quote(s3Url(t.bucket, key ?? ''));
  const details = { bucket: t.bucket, ...(key !== undefined ? { key } : {}), cause: withoutEcho(err) };
  const incomplete = step.kind === 'write' || step.kind === 'delete'
    ? `; the upload is incomplete (${quote(s3Url(t.bucket, t.manifestKey))} is written only after every file): run it again to resume`
    : '';
  if (code === 'CredentialsProviderError') {
    return new UploadError(
      `no AWS credentials for bucket ${quote(t.bucket)} ${detail}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, ` +
        'or run where an instance or task role provides them',
      { ...details, reason: 'credentials' },
    );
  }
  if (CREDENTIAL_CODES.has(code)) {
    const used = t.key !== undefined ? ` the access key ID ${quote(t.key.id)} (${t.key.from}) was refused;` : '';
    return new UploadError(
      `S3 rejected the credentials for bucket ${quote(t.bucket)} ${detail}:${used} check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ` +
        "or AWS_PROFILE (the SDK's default credential chain)",
      { ...details, reason: 'credentials' },
    );
  }
  const local = err as { syscall?: unknown; path?: unknown; code?: unknown };
  if (typeof local.syscall === 'string' && typeof local.path === 'string' && status(err) === undefined) {
    // A local file that could not be read (removed or made unreadable after it was hashed): not S3's doing.
    return new LabelError(
      `cannot read ${quote(local.path)} to upload it as ${where} (${String(local.code)}: ${messageOf(err)}): the labelled folder ` +
        `changed after the upload hashed it; put the file back or run ${t.names.relabel} again${incomplete}`,
      { path: local.path, files: [local.path], cause: err },
    );
  }
  if (unanswered(err)) {
    // No answer at all (refused, unresolvable, timed out): where it was sent is what to check. Mid-upload, a dropped
    // connection is worth a second run; before anything was written, the address is what is wrong.
    const at = t.endpoint !== undefined
      ? `the S3 endpoint ${quote(endpointLabel(t.endpoint))}`
      : `AWS S3 in ${quote(t.region)}`;
    const check = t.endpoint !== undefined
      ? `check ${t.names.endpoint} (or AWS_ENDPOINT_URL_S3) and that the server is running`
      : `check the network and ${t.names.region}`;
    const verb = { check: 'checking bucket', list: 'listing', read: 'reading', write: 'writing', delete: 'deleting' }[step.kind];
    return new UploadError(`no answer from ${at} ${verb} ${where} ${detail}: ${check}${incomplete}`, { ...details, reason: 'failed' });
  }
  if (code === 'NoSuchBucket' || (step.kind === 'check' && status(err) === 404)) {
    const at = t.endpoint !== undefined ? `endpoint ${quote(endpointLabel(t.endpoint))}` : 'AWS S3';
    // A web server that is not S3 answers 404 too, without S3's NoSuchBucket (probeRegion asks again with a listing).
    const notS3 = t.endpoint !== undefined && code !== 'NoSuchBucket' ? `; the endpoint answered 404 without S3's NoSuchBucket: is it an S3 server?` : '';
    return new UploadError(
      `bucket ${quote(t.bucket)} does not exist (${at}): create it in ${quote(t.region)} first or ${isFlag(t.names.bucket) ? `pass another ${t.names.bucket}` : `set ${t.names.bucket} to another bucket`}${notS3}`,
      { ...details, reason: 'no-bucket' },
    );
  }
  const redirected = regionOf(err);
  if (REGION_CODES.has(code) || status(err) === 301) {
    if (redirected !== undefined && redirected !== t.region) {
      try {
        checkBucketRegion({ bucket: t.bucket, bucketRegion: redirected, targetRegion: t.region, cause: err, settingNames: t.names });
      } catch (regionError) {
        return regionError as UploadError;
      }
    }
  }
  if (DENIED_CODES.has(code) || status(err) === 403) {
    const bucketOrPrefix = another([[t.names.bucket, 'bucket'], [t.names.prefix, 'prefix']]);
    const need =
      step.kind === 'write'
        ? `s3:PutObject on ${quote(`arn:aws:s3:::${t.bucket}/${t.prefix === '' ? '' : `${t.prefix}/`}*`)}; grant it or use ${bucketOrPrefix}`
        : step.kind === 'delete'
          ? `s3:DeleteObject on ${quote(`arn:aws:s3:::${t.bucket}/${step.key}`)} (to retire the old manifest object before changing files); grant it or use ${another([[t.names.prefix, 'prefix']])}`
          : step.kind === 'read'
            ? `s3:GetObject on ${quote(`arn:aws:s3:::${t.bucket}/${t.prefix === '' ? '' : `${t.prefix}/`}*`)}; grant it or use ${bucketOrPrefix}`
            : `s3:ListBucket on ${quote(`arn:aws:s3:::${t.bucket}`)}; grant it or use ${another([[t.names.bucket, 'bucket']])}`;
    const verb = { check: 'checking', list: 'listing', read: 'reading', write: 'writing', delete: 'deleting' }[step.kind];
    return new UploadError(`access denied ${verb} ${where} ${detail}: the credentials need ${need}${incomplete}`, { ...details, reason: 'denied' });
  }
  const verb = { check: 'checking bucket', list: 'listing', read: 'reading', write: 'writing', delete: 'deleting' }[step.kind];
  return new UploadError(`S3 failed ${verb} ${where} ${detail}${incomplete || ': run it again'}`, { ...details, reason: 'failed' });
}

// ---------------------------------------------------------------------------------------------------------------
// S3 requests

/** The bucket's region: HeadBucket's x-amz-bucket-region, else GetBucketLocation (an empty answer from an
 * S3-compatible endpoint means nothing). Throws for a missing bucket and for a region the server redirects to. */
async function probeRegion(client: S3Client, t: Target, customEndpoint: boolean, signal: AbortSignal): Promise<string | undefined> {
  try {
    const head = await client.send(new HeadBucketCommand({ Bucket: t.bucket }), { abortSignal: signal });
    if (head.BucketRegion !== undefined && head.BucketRegion !== '') return head.BucketRegion;
  } catch (err) {
    if (isAbort(err)) throw err;
    const redirected = regionOf(err);
    if (redirected !== undefined) return redirected;
    if (status(err) === 404) {
      // HEAD's 404 has no body, and any web server answers 404: a listing's answer says whether S3 knows no such bucket.
      try {
        await client.send(new ListObjectsV2Command({ Bucket: t.bucket, MaxKeys: 1 }), { abortSignal: signal });
      } catch (listErr) {
        if (isAbort(listErr)) throw listErr;
        throw toUploadError(sdkCode(listErr) === 'NoSuchBucket' ? listErr : err, { kind: 'check' }, t);
      }
      return undefined;
    }
    // Unanswered: the same address would not answer the two requests below either.
    if (unanswered(err) || sdkCode(err) === 'NoSuchBucket' || sdkCode(err) === 'CredentialsProviderError') {
      throw toUploadError(err, { kind: 'check' }, t);
    }
    // 403 and others carry no body on HEAD: the listing below names the precise cause.
  }
  try {
    const loc = await client.send(new GetBucketLocationCommand({ Bucket: t.bucket }), { abortSignal: signal });
    const constraint = loc.LocationConstraint as string | undefined;
    if (customEndpoint && (constraint === undefined || constraint === '')) return undefined;
    return bucketRegionFrom(constraint);
  } catch (err) {
    if (isAbort(err)) throw err;
    const redirected = regionOf(err);
    if (redirected !== undefined) return redirected;
    return undefined; // often not granted (s3:GetBucketLocation); the listing reports what matters
  }
}

async function listRemote(client: S3Client, t: Target, signal: AbortSignal): Promise<Map<string, RemoteObject>> {
  const remote = new Map<string, RemoteObject>();
  let token: string | undefined;
  try {
    do {
      const page = await client.send(
        new ListObjectsV2Command({
          Bucket: t.bucket,
          ...(t.prefix !== '' ? { Prefix: `${t.prefix}/` } : {}),
          ...(token !== undefined ? { ContinuationToken: token } : {}),
        }),
        { abortSignal: signal },
      );
      for (const o of page.Contents ?? []) {
        if (o.Key === undefined) continue;
        remote.set(o.Key, {
          key: o.Key,
          bytes: o.Size ?? -1,
          etag: o.ETag?.replace(/"/g, '').toLowerCase(),
          lastModified: o.LastModified?.toISOString(),
        });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  } catch (err) {
    if (isAbort(err)) throw err;
    throw toUploadError(err, { kind: 'list' }, t);
  }
  return remote;
}

/** Completes listed objects whose ETag is not their MD5 with `x-amz-meta-md5` and LastModified from HeadObject. */
async function headObject(client: S3Client, t: Target, remote: RemoteObject, signal: AbortSignal): Promise<RemoteObject> {
  try {
    const head = await client.send(new HeadObjectCommand({ Bucket: t.bucket, Key: remote.key }), { abortSignal: signal });
    const md5 = head.Metadata?.md5;
    return {
      ...remote,
      bytes: head.ContentLength ?? remote.bytes,
      lastModified: head.LastModified?.toISOString() ?? remote.lastModified,
      ...(md5 !== undefined ? { md5: md5.toLowerCase() } : { md5: '' }),
      encryption: head.ServerSideEncryption ?? 'none',
    };
  } catch (err) {
    if (isAbort(err)) throw err;
    throw toUploadError(err, { kind: 'read', key: remote.key }, t);
  }
}

/** The existing manifest object, or undefined when unreadable or not one of ours. */
async function readManifestObject(client: S3Client, t: Target, signal: AbortSignal): Promise<UploadManifest | undefined> {
  try {
    const r = await client.send(new GetObjectCommand({ Bucket: t.bucket, Key: t.manifestKey }), { abortSignal: signal });
    const parsed = JSON.parse((await r.Body?.transformToString('utf8')) ?? '') as Partial<UploadManifest>;
    return parsed.format === 'pneumotype-upload' && parsed.version === 1 && Array.isArray(parsed.files) ? (parsed as UploadManifest) : undefined;
  } catch (err) {
    if (isAbort(err)) throw err;
    return undefined;
  }
}

function sameFiles(a: readonly UploadedFile[], b: readonly UploadedFile[]): boolean {
  if (a.length !== b.length) return false;
  const index = new Map(a.map((f) => [f.key, f]));
  return b.every((f) => {
    const o = index.get(f.key);
    return o !== undefined && o.md5 === f.md5 && o.bytes === f.bytes && o.sha256 === f.sha256;
  });
}

/** Passes a file's bytes through and fails at the end, before the last part is released, when they are not the
 * bytes that were hashed: no object ever carries an `x-amz-meta-md5` its content does not have. */
class VerifyingStream extends Transform {
  readonly #md5 = createHash('md5');
  #bytes = 0;
  constructor(readonly local: LocalFile) {
    super();
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#md5.update(chunk);
    this.#bytes += chunk.length;
    callback(null, chunk);
  }
  override _flush(callback: TransformCallback): void {
    const md5 = this.#md5.digest('hex');
    if (md5 === this.local.md5 && this.#bytes === this.local.bytes) return callback();
    callback(
      new IntegrityError(
        `${quote(this.local.path)} changed while it was uploaded (${this.#bytes} bytes, MD5 ${md5}; hashed as ${this.local.bytes} ` +
          `bytes, MD5 ${this.local.md5}): nothing was completed for it; run the upload again`,
        { path: this.local.path, expected: this.local.md5, actual: md5 },
      ),
    );
  }
}

/** What one file's multipart upload came to, as seen through {@link uploadClient}. */
interface MultipartState {
  /** CreateMultipartUpload, once sent (its UploadId is set when it answers). */
  created: Promise<unknown> | undefined;
  uploadId: string | undefined;
  /** CompleteMultipartUpload answered 200. */
  completed: boolean;
  /** AbortMultipartUpload answered (done, or NoSuchUpload: nothing left to abort). */
  aborted: boolean;
}

/** The run's multipart bookkeeping, shared by every file. */
interface Multiparts {
  /** Aborts the clean-up requests CLEANUP_MS after the run stopped (an endpoint that no longer answers). */
  readonly cleanup: AbortSignal;
  /** Keys whose multipart upload may still be in the bucket: a CreateMultipartUpload unanswered, an abort failed. */
  readonly unresolved: Set<string>;
}

/**
 * Sends AbortMultipartUpload and waits for the answer: true when the upload is gone (aborted, or S3 knows it no
 * more), false when it may still be there.
 */
async function abortMultipart(client: S3Client, command: AbortMultipartUploadCommand, signal: AbortSignal): Promise<boolean> {
  try {
    await client.send(command, { abortSignal: signal });
    return true;
  } catch (err) {
    return sdkCode(err) === 'NoSuchUpload' || status(err) === 404;
  }
}

/**
 * lib-storage's Upload sends its requests without an abort signal (an aborted single PutObject would go on in the
 * background): a view of the client whose send() passes ours, except for the two requests that must run whatever
 * happens: CreateMultipartUpload (S3 may create the upload before an abort reaches it, and without the UploadId in
 * its answer nobody can abort it) and AbortMultipartUpload (whose failure is recorded, not thrown, so that the
 * upload's own error is the one reported). Both still give up CLEANUP_MS after the abort. `state` follows the
 * multipart upload, for {@link settleMultipart}.
 */
function uploadClient(client: S3Client, signal: AbortSignal, cleanup: AbortSignal, state: MultipartState): S3Client {
  const view = Object.create(client) as S3Client;
  const send = (command: Parameters<S3Client['send']>[0], options?: { abortSignal?: AbortSignal }): Promise<unknown> => {
    // Once stopped, nothing new is created: the SDK fails the request without sending it.
    if (command instanceof CreateMultipartUploadCommand && !signal.aborted) {
      const created = client.send(command, { ...options, abortSignal: cleanup }).then((r) => {
        state.uploadId = r.UploadId;
        return r;
      });
      state.created = created;
      return created;
    }
    if (command instanceof AbortMultipartUploadCommand) {
      return abortMultipart(client, command, cleanup).then((gone) => {
        state.aborted ||= gone;
        return { $metadata: {} };
      });
    }
    if (command instanceof CompleteMultipartUploadCommand) {
      return client.send(command, { ...options, abortSignal: signal }).then((r) => {
        state.completed = true;
        return r;
      });
    }
    return client.send(command, { ...options, abortSignal: signal });
  };
  Object.defineProperty(view, 'send', { value: send });
  return view;
}

/**
 * After a file's Upload failed: makes sure its multipart upload, if S3 created one, is aborted (lib-storage aborts
 * it itself when it knows the UploadId; this is the backstop). True when nothing of it is left in the bucket.
 */
async function settleMultipart(client: S3Client, t: Target, key: string, state: MultipartState, cleanup: AbortSignal): Promise<boolean> {
  if (state.created === undefined) return true;
  const created = await state.created.then(
    () => true,
    // An answer with a 4xx status: S3 created nothing. No answer (a timeout, the abort), or a 5xx: it may have.
    (err: unknown) => {
      const code = status(err);
      return code !== undefined && code >= 400 && code < 500 ? false : undefined;
    },
  );
  if (created === false || state.completed || state.aborted) return true;
  if (state.uploadId === undefined) return false;
  return abortMultipart(client, new AbortMultipartUploadCommand({ Bucket: t.bucket, Key: key, UploadId: state.uploadId }), cleanup);
}

/**
 * Aborts the incomplete multipart uploads under the prefix whose key is in `keys` (those this tool writes), and
 * returns how many. Best effort: a listing that is refused (s3:ListBucketMultipartUploads not granted, a server
 * that does not implement it) or an abort that fails leaves them to the bucket's lifecycle rule; only an abort of
 * `signal` is thrown.
 */
async function abortIncompleteUploads(client: S3Client, t: Target, keys: ReadonlySet<string>, signal: AbortSignal): Promise<number> {
  const found: { key: string; uploadId: string }[] = [];
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  const seen = new Set<string>([JSON.stringify([null, null])]);
  try {
    do {
      const page = await client.send(
        new ListMultipartUploadsCommand({
          Bucket: t.bucket,
          ...(t.prefix !== '' ? { Prefix: `${t.prefix}/` } : {}),
          ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
          ...(uploadIdMarker !== undefined ? { UploadIdMarker: uploadIdMarker } : {}),
        }),
        { abortSignal: signal },
      );
      for (const u of page.Uploads ?? []) {
        if (u.Key !== undefined && u.UploadId !== undefined && keys.has(u.Key) && !found.some((f) => f.uploadId === u.UploadId)) {
          found.push({ key: u.Key, uploadId: u.UploadId });
        }
      }
      // A server whose markers come back to where they were would page forever: the sweep ends there (best effort).
      const next = JSON.stringify([page.NextKeyMarker ?? null, page.NextUploadIdMarker ?? null]);
      const more = page.IsTruncated === true && (page.NextKeyMarker !== undefined || page.NextUploadIdMarker !== undefined) && !seen.has(next);
      seen.add(next);
      keyMarker = more ? page.NextKeyMarker : undefined;
      uploadIdMarker = more ? page.NextUploadIdMarker : undefined;
    } while (keyMarker !== undefined || uploadIdMarker !== undefined);
  } catch (err) {
    if (isAbort(err) && signal.aborted) throw err;
    return 0;
  }
  let aborted = 0;
  for (const u of found) {
    if (await abortMultipart(client, new AbortMultipartUploadCommand({ Bucket: t.bucket, Key: u.key, UploadId: u.uploadId }), signal)) aborted++;
    signal.throwIfAborted();
  }
  return aborted;
}

/** A signal that aborts `ms` after `signal` does; `dispose()` when done with it. */
function abortLater(signal: AbortSignal, ms: number): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const onAbort = (): void => {
    timer = setTimeout(() => controller.abort(new Error(`gave up cleaning up ${ms} ms after the upload stopped`)), ms);
    timer.unref();
  };
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  return {
    signal: controller.signal,
    dispose: () => {
      signal.removeEventListener('abort', onAbort);
      clearTimeout(timer);
    },
  };
}

async function putFile(
  client: S3Client,
  t: Target,
  local: LocalFile,
  partSize: number,
  signal: AbortSignal,
  multiparts: Multiparts,
  onBytes: (n: number) => void,
): Promise<UploadedFile> {
  const key = objectKey(t.prefix, local.file);
  const body = new VerifyingStream(local);
  const source = createReadStream(local.path, { highWaterMark: 1 << 20 });
  pipeline(source, body, () => undefined); // errors reach the consumer through `body`
  const state: MultipartState = { created: undefined, uploadId: undefined, completed: false, aborted: false };
  const upload = new Upload({
    client: uploadClient(client, signal, multiparts.cleanup, state),
    params: {
      Bucket: t.bucket,
      Key: key,
      Body: body,
      ContentLength: local.bytes,
      ContentType: contentType(local.file),
      Metadata: { md5: local.md5, sha256: local.sha256 },
      // A single PutObject (lib-storage goes multipart only above partSize): S3 checks the MD5 too.
      ...(local.bytes <= partSize ? { ContentMD5: Buffer.from(local.md5, 'hex').toString('base64') } : {}),
    },
    partSize,
    queueSize: PART_QUEUE,
    leavePartsOnError: false,
  });
  let reported = 0;
  upload.on('httpUploadProgress', (p) => {
    const loaded = Math.min(p.loaded ?? 0, local.bytes);
    if (loaded > reported) {
      onBytes(loaded - reported);
      reported = loaded;
    }
  });
  // Not upload.abort(): its done() would reject at once and abort the multipart upload in the background, after
  // upload() returned and perhaps destroyed the client. Our signal fails every request but the multipart ones, and
  // done() settles once lib-storage has sent AbortMultipartUpload and had its answer.
  try {
    await upload.done();
  } catch (err) {
    if (!(await settleMultipart(client, t, key, state, multiparts.cleanup))) multiparts.unresolved.add(key);
    if (isAbort(err) || signal.aborted) throw signal.reason ?? err;
    throw toUploadError(err, { kind: 'write', key }, t);
  } finally {
    body.destroy();
    source.destroy();
  }
  if (reported < local.bytes) onBytes(local.bytes - reported);
  return { key, file: local.file, bytes: local.bytes, md5: local.md5, sha256: local.sha256, completedAt: new Date().toISOString() };
}

/**
 * The endpoint the SDK reads from the environment for S3 (AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL), if any; none
 * under AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true, as the SDK does.
 *
 * @example environmentEndpoint({ AWS_ENDPOINT_URL: 'http://127.0.0.1:9000' }) // 'http://127.0.0.1:9000'
 */
export function environmentEndpoint(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.AWS_IGNORE_CONFIGURED_ENDPOINT_URLS === 'true') return undefined;
  const url = env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL;
  return url === undefined || url === '' ? undefined : url;
}

/** The access key ID a client signs with and where it came from; undefined when there are no credentials yet. */
async function signingKey(client: S3Client, given: boolean): Promise<{ id: string; from: string } | undefined> {
  try {
    const { accessKeyId: id } = await client.config.credentials();
    const from = given
      ? 'the client passed in'
      : process.env.AWS_ACCESS_KEY_ID === id
        ? 'from AWS_ACCESS_KEY_ID'
        : process.env.AWS_PROFILE !== undefined && process.env.AWS_PROFILE !== ''
          ? `from profile ${quote(process.env.AWS_PROFILE)}`
          : "from the SDK's default chain: a shared credentials file, SSO or a role";
    return { id, from };
  } catch {
    return undefined; // no credentials: the first request says so (CredentialsProviderError)
  }
}

/** The custom endpoint of a client, as a URL string (undefined when it cannot be read). */
async function clientEndpoint(client: S3Client): Promise<string | undefined> {
  try {
    const e = await client.config.endpoint?.();
    if (e === undefined) return undefined;
    return `${e.protocol}//${e.hostname}${e.port !== undefined ? `:${e.port}` : ''}${e.path === '/' ? '' : e.path}`;
  } catch {
    return undefined;
  }
}

function defaultClient(options: UploadOptions): S3Client {
  // The SDK's notice that its later versions will need Node.js 22 would land on stderr (in a notebook, as an
  // error-coloured stream): the library prints nothing. Set the variable to "false" to see it.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const config: S3ClientConfig = {
    // Without these the SDK waits forever on an endpoint that accepts the connection and never answers.
    requestHandler: {
      connectionTimeout: options.connectTimeoutMs ?? DEFAULTS.uploadConnectTimeoutMs,
      requestTimeout: options.requestTimeoutMs ?? DEFAULTS.uploadRequestTimeoutMs,
      throwOnRequestTimeout: true,
    },
  };
  if (options.region !== undefined) config.region = options.region;
  // The environment's endpoint gets what --endpoint gets: S3-compatible servers want path-style addressing.
  const endpoint = options.endpoint ?? environmentEndpoint();
  if (endpoint !== undefined) {
    config.endpoint = endpoint;
    config.forcePathStyle = true;
    // S3-compatible servers rarely understand the flexible checksums (aws-chunked bodies) the SDK sends by default.
    config.requestChecksumCalculation = 'WHEN_REQUIRED';
    config.responseChecksumValidation = 'WHEN_REQUIRED';
  }
  return new S3Client(config);
}

/**
 * Uploads the labelled dataset folder to `s3://bucket/prefix/`: every file of manifest.csv, manifest.csv and
 * summary.json themselves, and rejected/ when present. Files already in the bucket with the same size and MD5 (the
 * ETag, or `x-amz-meta-md5` for multipart objects) are skipped, so an interrupted upload resumes; files over
 * `partSize` go multipart. The bucket's region must be the one targeted. `<prefix>/_pneumotype-upload.json` is
 * written last, only once every file is there, and is removed before a re-run changes any file: a reader knows an
 * upload is complete when that object exists. Credentials come from the SDK's default chain and are never written
 * or reported.
 *
 * Multipart uploads, which S3 keeps and bills until they are completed or aborted: every one this run starts is
 * completed, or aborted with the abort answered, before upload() returns or rejects (after an abort or a failure it
 * waits up to 15 s for those answers). Each run first aborts the incomplete multipart uploads under the prefix for
 * this dataset's keys, those an earlier run left (it needs s3:ListBucketMultipartUploads and s3:AbortMultipartUpload,
 * and goes on without them); two runs on the same prefix at once would so abort each other's. A process killed
 * outright (SIGKILL, a lost instance) cleans up nothing until such a re-run: the bucket's lifecycle rule
 * AbortIncompleteMultipartUpload is the backstop (the README gives one).
 *
 * @example
 * const r = await upload({ data: 'data/labeled', bucket: 'my-scans', prefix: 'chest-xray/v2', region: 'eu-west-1' })
 * console.log(`${r.uploaded} uploaded, ${r.skipped} already there`)
 */
export async function upload(options: UploadOptions): Promise<UploadResult> {
  const { prefix, concurrency, partSize } = checkUploadOptions(options);
  const dir = options.data ?? DEFAULTS.labeledDir;
  const bucket = options.bucket;
  const names = options.settingNames ?? CLI_SETTING_NAMES;
  const manifestKey = objectKey(prefix, UPLOAD_MANIFEST_NAME);
  const stop = new AbortController();
  // Every file being sent, each of its parts and the SDK's requests listen to it: more than Node's warning level of 10.
  setMaxListeners(Math.max(10, concurrency * (PART_QUEUE + 2) * 2), stop.signal);
  const onAbort = (): void => stop.abort(options.signal?.reason);
  if (options.signal?.aborted) onAbort();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  const cleanup = abortLater(stop.signal, CLEANUP_MS);
  setMaxListeners(Math.max(10, concurrency * (PART_QUEUE + 2) * 2), cleanup.signal);
  const multiparts: Multiparts = { cleanup: cleanup.signal, unresolved: new Set() };
  const client = options.client ?? defaultClient(options);
  const aborted = (cause: unknown): UploadError =>
    new UploadError(
      `upload to ${quote(s3Url(bucket, prefix === '' ? '' : `${prefix}/`))} was aborted: run it again to upload the rest ` +
        `(${quote(s3Url(bucket, manifestKey))} is written only when every file is there)`,
      { bucket, reason: 'aborted', cause },
    );
  // A file failed before any abort: that failure is the one reported, even if the caller aborts during the clean-up.
  let failed = false;
  try {
    const region = options.region ?? (await client.config.region().catch(() => undefined));
    if (region === undefined || region === '') {
      const orEnv = names.region === 'AWS_REGION' ? '' : ' or set AWS_REGION';
      throw new ConfigError(`no AWS region for bucket ${quote(bucket)}: ${giveIt(names.region)} (the region the model is deployed to)${orEnv}`);
    }
    // An endpoint given, one a client passed in was made with, or one the SDK takes from the environment.
    const own = options.client === undefined ? options.endpoint ?? environmentEndpoint() : undefined;
    const customEndpoint = own !== undefined || (client.config as { isCustomEndpoint?: boolean }).isCustomEndpoint === true;
    const endpoint = own ?? (customEndpoint ? await clientEndpoint(client) : undefined);
    const key = await signingKey(client, options.client !== undefined);
    const t: Target = { bucket, prefix, endpoint, region, manifestKey, names, ...(key !== undefined ? { key } : {}) };

    const dataset = await readDataset(dir, names);
    const summary = dataset.summary;

    // Nothing is hashed or written before the bucket is known to exist, in the right region, and listable.
    const bucketRegion = await probeRegion(client, t, customEndpoint, stop.signal);
    checkBucketRegion({ bucket, bucketRegion, targetRegion: region, settingNames: names });
    const remote = await listRemote(client, t, stop.signal);
    const files = await hashDataset(dataset, concurrency, stop.signal, options.onProgress, names);

    const first = planUpload({ prefix, files, remote });
    const verified = await mapPool(first.verify, concurrency, async (v) => ({ local: v.local, remote: await headObject(client, t, v.remote, stop.signal) }), stop.signal);
    const second = planUpload({ prefix, files: verified.map((v) => v.local), remote: new Map(verified.map((v) => [v.remote.key, v.remote])) });
    const toUpload = [...first.upload, ...second.upload];
    const skipped = [...first.skip, ...second.skip];
    const datasetKeys = new Set(files.map((f) => objectKey(prefix, f.file)));
    // What a run that was killed (or whose clean-up failed) left: parts S3 bills and nobody will complete.
    const leftover = await abortIncompleteUploads(client, t, datasetKeys, stop.signal);
    const otherObjects = [...remote.keys()].filter((k) => !datasetKeys.has(k) && k !== manifestKey).length;

    const totalBytes = files.reduce((a, f) => a + f.bytes, 0);
    const skippedBytes = skipped.reduce((a, s) => a + s.local.bytes, 0);
    const tracker = new ProgressTracker({
      stage: 'upload',
      unit: 'bytes',
      total: totalBytes,
      done: skippedBytes,
      onProgress: options.onProgress,
      intervalMs: DEFAULTS.progressIntervalMs,
    });
    if (skipped.length > 0) tracker.note(`${skipped.length} of ${files.length} file(s) already in the bucket`);
    if (leftover > 0) tracker.note(`${leftover} incomplete multipart upload(s) left by an earlier run aborted`);

    // A manifest object that no longer describes the bucket goes before the first file changes.
    const hadManifest = remote.has(manifestKey);
    if (hadManifest && toUpload.length > 0) {
      try {
        await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: manifestKey }), { abortSignal: stop.signal });
      } catch (err) {
        if (isAbort(err)) throw err;
        throw toUploadError(err, { kind: 'delete', key: manifestKey }, t);
      }
    }

    // mapPool settles once every file has: each has completed or aborted its multipart upload by then.
    const sent = await mapPool(toUpload, concurrency, async (local) => {
      try {
        return await putFile(client, t, local, partSize, stop.signal, multiparts, (n) => tracker.add(n));
      } catch (err) {
        if (!failed && !options.signal?.aborted) {
          failed = true;
          stop.abort(err); // the first failure stops the others; it is the one reported
        }
        throw err;
      }
    }, stop.signal).catch(async (err: unknown) => {
      // A CreateMultipartUpload that never answered (S3 may have created the upload), an abort that failed: find them.
      if (multiparts.unresolved.size > 0) await abortIncompleteUploads(client, t, multiparts.unresolved, multiparts.cleanup).catch(() => 0);
      throw err;
    });

    const byKey = new Map<string, UploadedFile>(sent.map((f) => [f.key, f]));
    for (const s of skipped) {
      byKey.set(s.remote.key, {
        key: s.remote.key,
        file: s.local.file,
        bytes: s.local.bytes,
        md5: s.local.md5,
        sha256: s.local.sha256,
        completedAt: s.remote.lastModified ?? new Date().toISOString(),
      });
    }
    const listed = files.map((f) => byKey.get(objectKey(prefix, f.file)) as UploadedFile);
    const previous = hadManifest && toUpload.length === 0 ? await readManifestObject(client, t, stop.signal) : undefined;
    const keep = previous !== undefined && previous.bucket === bucket && previous.prefix === prefix && sameFiles(previous.files, listed);
    const manifest: UploadManifest = keep
      ? previous
      : {
          format: 'pneumotype-upload',
          version: 1,
          bucket,
          prefix,
          region: bucketRegion ?? region,
          completedAt: new Date().toISOString(),
          totals: { files: listed.length, bytes: totalBytes },
          summary,
          files: listed,
        };
    if (!keep) {
      const json = `${JSON.stringify(manifest, null, 2)}\n`;
      const md5 = createHash('md5').update(json).digest();
      try {
        await client.send(
          new PutObjectCommand({
            Bucket: bucket,
            Key: manifestKey,
            Body: json,
            ContentType: 'application/json',
            ContentMD5: md5.toString('base64'),
            Metadata: { md5: md5.toString('hex') },
          }),
          { abortSignal: stop.signal },
        );
      } catch (err) {
        if (isAbort(err)) throw err;
        throw toUploadError(err, { kind: 'write', key: manifestKey }, t);
      }
    }
    tracker.finish(`${toUpload.length} uploaded, ${skipped.length} already there`);
    return {
      bucket,
      prefix,
      region: bucketRegion,
      manifestKey,
      uploaded: toUpload.length,
      skipped: skipped.length,
      bytes: toUpload.reduce((a, f) => a + f.bytes, 0),
      skippedBytes,
      totalBytes,
      manifestWritten: !keep,
      otherObjects,
      manifest,
    };
  } catch (err) {
    if (options.signal?.aborted && !failed) throw aborted(options.signal.reason ?? err);
    throw err; // S3 failures are UploadErrors already, local ones LabelError / IntegrityError / file-system errors
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    cleanup.dispose();
    if (options.client === undefined) client.destroy();
  }
}
