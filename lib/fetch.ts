// Downloads the dataset archive: known sources, URLs or local paths; resumable, retried, verified and proxy-aware.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { open, readFile, rename, rm, stat, statfs, type FileHandle } from 'node:fs/promises';
import type { Agent } from 'node:http';
import { join } from 'node:path';
import { HttpProxyAgent } from 'http-proxy-agent';
import { HttpsProxyAgent } from 'https-proxy-agent';
import nodeFetch from 'node-fetch';
import type { Response } from 'node-fetch';
import { DEFAULTS, SOURCES, type KnownSource } from './config.js';
import { ArchiveError, ConfigError, FetchError, IntegrityError, PneumotypeError, causeChain, checkInteger, messageOf, quote } from './errors.js';
import { ensureFolder, fileSize, writeFileAtomic, writeJsonAtomic } from './fsx.js';
import { withLock } from './lock.js';
import { ProgressTracker, type ProgressCallback } from './progress.js';

/** The HTTP client: node-fetch's default export, or anything with its signature (tests, instrumented clients). */
export type FetchFn = typeof nodeFetch;

/** Options of {@link fetchDataset}. */
export interface FetchOptions {
  /** 'v2' | 'v3' | http(s) URL | local path. Default: env PNEUMOTYPE_SOURCE, else DEFAULTS.source. */
  source?: string;
  /** Folder the archive is saved in. Default DEFAULTS.downloadsDir. */
  outDir?: string;
  /** Expected SHA-256, hex. Optional: the digest is computed and recorded in `NAME.sha256` either way. */
  sha256?: string;
  /** Saved file name. Default: the known source's fileName, else the URL's last path segment, else 'download.zip'. */
  fileName?: string;
  /** Transient failures retried (network errors, cut bodies, timeouts, 5xx, 408, 429). Default DEFAULTS.fetchRetries. */
  retries?: number;
  /** First backoff in ms; doubles each retry, with jitter. Default DEFAULTS.fetchBackoffMs. */
  backoffMs?: number;
  /** No bytes for this long counts as a transient failure. Default DEFAULTS.fetchTimeoutMs. */
  timeoutMs?: number;
  /**
   * A download longer than this is refused: declared by the server, or counted as it arrives when it declares no
   * length (an endless body would fill the disk). Default DEFAULTS.maxDownloadBytes (20 GiB; v3 is 7.9 GB).
   */
  maxBytes?: number;
  /** HTTP client. Default node-fetch. */
  fetch?: FetchFn;
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
  /** Environment read for PNEUMOTYPE_SOURCE and the proxy variables. Default process.env. */
  env?: NodeJS.ProcessEnv;
}

/** What {@link fetchDataset} produced. */
export interface FetchResult {
  /** The archive on disk (the given path itself for a local source). */
  path: string;
  bytes: number;
  /** SHA-256 of the archive, lowercase hex. */
  sha256: string;
  /** The source as given (or defaulted): 'v2', a URL or a path; a URL's user name and password shown as `***`. */
  source: string;
  /** The URL requested (before any redirect), its user name and password shown as `***`. */
  url?: string;
  /** True when this call continued a partial download instead of starting from zero. */
  resumed: boolean;
  /** False when a verified file was already there or a local path was given. */
  downloaded: boolean;
}

/** What {@link obtainDataset} found: a fetched or verified archive, or a folder (an archive extracted by other means) taken as it is. */
export type ObtainedDataset = (FetchResult & { readonly kind: 'archive' }) | { readonly kind: 'folder'; readonly path: string; readonly source: string };

/** A source string, classified. */
export type ResolvedSource = { kind: 'known'; known: KnownSource } | { kind: 'url'; url: string } | { kind: 'path'; path: string };

/**
 * Whether a source or model location is an http(s) URL (any case of the scheme), as opposed to a path or a known name.
 *
 * @example isHttpUrl('HTTPS://example.org/model.json') // true
 */
export function isHttpUrl(text: string): boolean {
  return /^https?:\/\//i.test(text);
}

/**
 * Classifies a source string: a known name ('v2', 'v3'), an http(s) URL, or the path of an existing file or folder.
 * Anything else is a ConfigError that lists the accepted forms.
 *
 * @example
 * resolveSource('v3') // { kind: 'known', known: SOURCES.v3 }
 * resolveSource('https://example.org/ChestXRay2017.zip') // { kind: 'url', url: ... }
 */
export function resolveSource(source: string): ResolvedSource {
  if (Object.hasOwn(SOURCES, source)) return { kind: 'known', known: SOURCES[source as keyof typeof SOURCES] };
  if (isHttpUrl(source)) {
    try {
      return { kind: 'url', url: new URL(source).href };
    } catch (err) {
      throw new ConfigError(`Dataset source ${quote(maskUserInfo(source))} is not a valid URL`, { cause: err });
    }
  }
  if (source !== '' && existsSync(source)) return { kind: 'path', path: source };
  const known = Object.keys(SOURCES).map((k) => quote(k)).join(' or ');
  const zipPath = 'the path of an existing zip file (run, relabel, evaluate and the notebooks also take an extracted folder)';
  // Another scheme (ftp://, s3://): said as such, not as a missing file.
  const scheme = /^([a-z][a-z0-9+.-]+):\/\//i.exec(source)?.[1];
  if (scheme !== undefined) {
    throw new ConfigError(
      `Dataset source ${quote(maskUserInfo(source))} is a ${scheme}: URL: only http(s) URLs are downloaded; expected ${known}, an http(s) URL, or ${zipPath}`,
    );
  }
  // A path that is not there (a folder in it, or a .zip name) is said to be missing, not an unknown kind of source.
  if (/[\\/]|\.zip$/i.test(source)) {
    throw new ConfigError(`Dataset source ${quote(source)} does not exist: expected ${zipPath}, ${known}, or an http(s) URL`, { path: source });
  }
  throw new ConfigError(`Unknown dataset source ${quote(source)}: expected ${known}, an http(s) URL, or ${zipPath}`);
}

/**
 * Where {@link fetchDataset} puts (or, for a local path, finds) the archive of `source`, without touching anything;
 * undefined for a source that is none of the accepted forms.
 *
 * @example archivePathFor('v2', 'data/downloads') // "data/downloads/ChestXRay2017.zip"
 */
export function archivePathFor(source: string, outDir: string = DEFAULTS.downloadsDir): string | undefined {
  if (Object.hasOwn(SOURCES, source)) return join(outDir, SOURCES[source as keyof typeof SOURCES].fileName);
  if (isHttpUrl(source)) {
    try {
      return join(outDir, fileNameFromUrl(new URL(source).href));
    } catch {
      return undefined;
    }
  }
  return source === '' ? undefined : source;
}

/**
 * Fetches the dataset archive into `outDir` and verifies it, resuming a previous partial download when the server
 * allows it. A local path is only verified. Progress goes to `onProgress` (stage 'fetch', unit 'bytes').
 *
 * While it works it holds `NAME.lock` beside the download: a second process fetching the same file gets a BusyError.
 *
 * @example
 * const { path, sha256 } = await fetchDataset({ source: 'v2', outDir: 'data/downloads', onProgress: console.log });
 */
export async function fetchDataset(options: FetchOptions = {}): Promise<FetchResult> {
  const env = options.env ?? process.env;
  const source = sourceOf(options);
  const expected = normalizeSha(options.sha256);
  const resolved = resolveSource(source);
  const tracker = new ProgressTracker({
    stage: 'fetch',
    unit: 'bytes',
    onProgress: options.onProgress,
    intervalMs: DEFAULTS.progressIntervalMs,
  });
  if (resolved.kind === 'path') return verifyLocal(resolved.path, source, expected, tracker);

  // node-fetch refuses a URL with a user name and password in it: they go as an Authorization header instead, and are
  // shown as `***` in every message, note, record and result.
  const { url, shown, authorization } = splitCredentials(resolved.kind === 'known' ? resolved.known.url : resolved.url);
  const shownSource = resolved.kind === 'url' ? shown : source;
  const name = options.fileName ?? (resolved.kind === 'known' ? resolved.known.fileName : fileNameFromUrl(url));
  checkFileName(name);
  checkProxy(url, env);
  const outDir = options.outDir ?? DEFAULTS.downloadsDir;
  const maxBytes = options.maxBytes ?? DEFAULTS.maxDownloadBytes;
  checkInteger('maxBytes', maxBytes, 1);
  // What the record of a verified download names as its source: a known source's name, or the URL as shown.
  const recordAs = resolved.kind === 'known' ? resolved.known.name : shown;
  await ensureFolder(outDir);
  const finalPath = join(outDir, name);

  // One process at a time: a second would write the same .part and rename it from under the first.
  return withLock(`${finalPath}.lock`, `downloading ${name} into ${quote(outDir)}`, async () => {
    const existing = await fileSize(finalPath);
    if (existing !== undefined) {
      const record = await readShaRecord(`${finalPath}.sha256`);
      // The URL as requested, not where it redirected to (a known source's storage host may change from run to run).
      // A record without a URL was written before URLs were recorded: taken as this URL's, and given it below. A
      // known source (v2, v3) is recorded by its name, which holds whatever its URL becomes; a digest asked for
      // (`sha256`) decides by the content itself, so a mirror's copy that matches it is taken too.
      if (record?.url !== undefined && expected === undefined && !sameSource(record.url, resolved.kind === 'known' ? resolved.known.name : url)) {
        throw new FetchError(
          `${quote(finalPath)} was downloaded from ${quote(record.url)}, not from ${quote(shown)}: choose another downloads folder ` +
            `(--out or --data-dir; PNEUMOTYPE_DATA_DIR in the notebooks), or move ${quote(finalPath)} away to download ${quote(shown)}; nothing was changed`,
          { url: shown, path: finalPath },
        );
      }
      const recorded = record?.digest;
      const want = expected ?? recorded;
      tracker.setTotal(existing);
      tracker.note(`verifying existing ${name}`);
      const actual = await hashFile(finalPath, existing, tracker);
      if (expected !== undefined && actual === recorded && actual !== expected) {
        // The file is what was downloaded and recorded: downloading it again would most likely give the same bytes.
        throw new IntegrityError(
          `${quote(finalPath)} has SHA-256 ${actual}, as recorded when it was downloaded, not the ${expected} asked for: ` +
            `check the expected digest, or move the file away to download it again; nothing was changed`,
          { expected, actual, path: finalPath },
        );
      }
      // Without a digest to check, a file that was never verified (no record: copied in, or left by another tool)
      // must at least end as a zip archive does: one cut short would pass as verified forever after.
      const whole = want !== undefined || (await endsLikeZip(finalPath, existing));
      if (whole && (want === undefined || actual === want)) {
        if (recorded !== actual || record?.url !== recordAs) await writeShaRecord(finalPath, name, actual, recordAs);
        tracker.finish(`${name} already downloaded and verified`);
        return { path: finalPath, bytes: existing, sha256: actual, source: shownSource, url: shown, resumed: false, downloaded: false };
      }
      const bad = await moveAside(finalPath);
      await rm(`${finalPath}.sha256`, { force: true });
      tracker.set(
        0,
        whole
          ? `existing ${name} has SHA-256 ${actual}, expected ${want}; moved to ${bad}, downloading again`
          : `existing ${name} (${formatBytes(existing)}, never verified) does not end as a zip archive does; moved to ${bad}, downloading again`,
      );
    }

    const download = new Download({
      url,
      shown,
      recordAs,
      authorization,
      outDir,
      finalPath,
      name,
      expected,
      retries: options.retries ?? DEFAULTS.fetchRetries,
      backoffMs: options.backoffMs ?? DEFAULTS.fetchBackoffMs,
      timeoutMs: options.timeoutMs ?? DEFAULTS.fetchTimeoutMs,
      maxBytes,
      fetch: options.fetch ?? nodeFetch,
      agent: proxyAgentFor(env),
      signal: options.signal,
      tracker,
    });
    const { bytes, sha256, resumed } = await download.run();
    return { path: finalPath, bytes, sha256, source: shownSource, url: shown, resumed, downloaded: true };
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The download state machine

interface PartState {
  url: string;
  etag?: string;
  lastModified?: string;
  total?: number;
}

/** A finished body: its size, and whether the server gave that length (else the end was only the connection's). */
interface Complete {
  size: number;
  lengthKnown: boolean;
}

interface DownloadSettings {
  /** The URL requested, without user name and password. */
  url: string;
  /** The URL as messages, notes and records show it: `***` for a user name and password. */
  shown: string;
  /** What the verified download's record names as its source (see fetchDataset). */
  recordAs: string;
  /** `Basic ...` for the user name and password the URL had, sent to its origin only. */
  authorization: string | undefined;
  /** The folder the download is written to (its free space is checked). */
  outDir: string;
  finalPath: string;
  name: string;
  expected: string | undefined;
  retries: number;
  backoffMs: number;
  timeoutMs: number;
  maxBytes: number;
  fetch: FetchFn;
  agent: (url: URL) => Agent | undefined;
  signal: AbortSignal | undefined;
  tracker: ProgressTracker;
}

class Download {
  readonly #s: DownloadSettings;
  readonly #partPath: string;
  readonly #statePath: string;
  /** Hash of the part's first #hashed bytes. */
  #hash: Hash | undefined;
  #hashed = 0;
  #resumed = false;
  /**
   * The largest the .part has been since the download last had to start again for a reason of its own (another
   * file, a stale record): the count of failures starts again only when the .part grows past it, so a server that
   * cuts every response and cannot resume (each attempt from zero) still runs out of retries.
   */
  #largest = 0;

  constructor(settings: DownloadSettings) {
    this.#s = settings;
    this.#partPath = `${settings.finalPath}.part`;
    this.#statePath = `${this.#partPath}.json`;
  }

  async run(): Promise<{ bytes: number; sha256: string; resumed: boolean }> {
    const { tracker, retries } = this.#s;
    let failures = 0;
    let restarts = 0;
    this.#largest = (await fileSize(this.#partPath)) ?? 0;
    for (;;) {
      this.#throwIfAborted();
      try {
        const outcome = await this.#attempt();
        if (outcome === 'again') {
          if (++restarts > retries + 1) throw new TransientError('the server keeps answering with ranges that cannot be resumed');
          continue;
        }
        return await this.#finish(outcome);
      } catch (err) {
        if (!(err instanceof TransientError)) throw err;
        const size = (await fileSize(this.#partPath)) ?? 0;
        if (size > this.#largest) {
          this.#largest = size;
          failures = 0;
        }
        failures++;
        // A name that does not resolve before any byte came (NXDOMAIN, or no network at all) will not on a retry
        // seconds later either; EAI_AGAIN, a resolver's temporary failure, is retried.
        if (failures > retries || (/\bENOTFOUND\b/.test(err.message) && this.#largest === 0)) {
          throw new FetchError(
            `Download of ${quote(this.#s.shown)} failed after ${failures} attempt${failures === 1 ? '' : 's'}: ${err.message}${this.#keptNote()}` +
              (UNREACHABLE.test(err.message) && this.#largest === 0
                ? '; without network access, give --source (or PNEUMOTYPE_SOURCE) the path of a copy of the archive (run and relabel also take it extracted)'
                : ''),
            { url: this.#s.shown, ...(err.status === undefined ? {} : { status: err.status }), cause: err },
          );
        }
        const delay = Math.max(backoffDelay(this.#s.backoffMs, failures), err.retryAfterMs ?? 0);
        tracker.note(`retry ${failures} of ${retries} in ${formatSeconds(delay)}: ${err.message}`);
        await sleep(delay, this.#s.signal).catch(() => this.#throwIfAborted());
      }
    }
  }

  /** One request. Returns the finished body (its size, and whether the server gave that length), or 'again' after a restart. */
  async #attempt(): Promise<Complete | 'again'> {
    const { shown, tracker } = this.#s;
    let offset = (await fileSize(this.#partPath)) ?? 0;
    let state = offset > 0 ? await this.#readState() : undefined;
    if (offset > 0 && state !== undefined && !sameUrl(state.url, shown)) {
      // Another source's partial download (a mirror tried before): never wiped, it may be gigabytes; set aside under a
      // name of its own (NAME.part.previous, .previous-2, …: an earlier one set aside stays too).
      let aside = `${this.#partPath}.previous`;
      for (let n = 2; (await fileSize(aside)) !== undefined; n++) aside = `${this.#partPath}.previous-${n}`;
      await rename(this.#partPath, aside).catch((err: unknown) => {
        throw new FetchError(`cannot set ${quote(this.#partPath)} (from another source) aside as ${quote(aside)}: ${messageOf(err)}`, { url: this.#s.shown, path: this.#partPath, cause: err });
      });
      await rename(this.#statePath, `${aside}.json`).catch(() => {}); // its record, where there is one
      tracker.set(0, `${this.#s.name}.part was downloaded from another source (${quote(state.url)}): kept as ${quote(aside)}; starting this one from zero`);
      this.#largest = 0;
      offset = 0;
      state = undefined;
    }
    if (offset > 0 && (state === undefined || (state.total !== undefined && offset > state.total))) {
      tracker.set(0, `cannot resume ${this.#s.name}.part (no matching record of its source); restarting from zero`);
      await this.#truncate();
      this.#largest = 0;
      offset = 0;
      state = undefined;
    }
    const validator = state?.etag !== undefined && !state.etag.startsWith('W/') ? state.etag : state?.lastModified;
    if (offset > 0 && validator === undefined) {
      tracker.set(0, `cannot resume ${this.#s.name}.part (the server sent no ETag or Last-Modified); restarting from zero`);
      await this.#truncate();
      offset = 0;
    }

    const headers: Record<string, string> = { 'Accept-Encoding': 'identity' };
    // Hash what is on disk before asking, so neither side waits on the disk with a connection open.
    if (offset > 0) await this.#ensureHash(offset);
    if (offset > 0) {
      headers.Range = `bytes=${offset}-`;
      if (validator !== undefined) headers['If-Range'] = validator;
    }
    const idle = new IdleTimer(this.#s.timeoutMs, this.#s.signal);
    try {
      let res: Response;
      try {
        res = await this.#request(headers, idle.signal);
      } catch (err) {
        throw this.#networkError(err, idle);
      }
      const status = res.status;
      if (status === 416 && offset > 0) {
        cancel(res);
        const total = contentRangeTotal(res.headers.get('content-range')) ?? state?.total;
        const changed = state === undefined ? undefined : describeChange(state, validatorsOf(res, shown), total);
        if (total === offset && changed === undefined) return { size: offset, lengthKnown: true };
        tracker.set(0, `${changed ?? `server refused to resume at ${offset} bytes (HTTP 416)`}; restarting from zero`);
        await this.#truncate();
        if (changed !== undefined) this.#largest = 0;
        return 'again';
      }
      if (isTransientStatus(status)) {
        cancel(res);
        throw new TransientError(`HTTP ${status} ${res.statusText}`.trim(), {
          status,
          retryAfterMs: parseRetryAfter(res.headers.get('retry-after')),
        });
      }
      if (status !== 200 && status !== 206) {
        cancel(res);
        throw new FetchError(`Cannot download ${quote(shown)}: the server answered HTTP ${status} ${res.statusText}`.trimEnd(), {
          url: shown,
          status,
        });
      }

      const fresh = validatorsOf(res, shown);
      const encoding = res.headers.get('content-encoding');
      if (encoding !== null && !/^\s*(identity|none)?\s*$/i.test(encoding)) {
        cancel(res);
        throw new FetchError(
          `Cannot download ${quote(shown)}: the server sent it ${quote(encoding)}-encoded although "identity" was asked, so its ` +
            `bytes cannot be resumed or verified; download it another way (a browser, \`curl --compressed\`) and give the file's path as the source`,
          { url: shown },
        );
      }

      let start = 0;
      let total: number | undefined;
      if (status === 206) {
        const range = parseContentRange(res.headers.get('content-range'));
        const changed = state === undefined ? undefined : describeChange(state, fresh, range?.total);
        if (range === undefined || range.start !== offset || changed !== undefined) {
          cancel(res);
          tracker.set(0, `${changed ?? 'the server answered with another range'}; restarting from zero`);
          await this.#truncate();
          if (changed !== undefined) this.#largest = 0;
          return 'again';
        }
        // A 206 SHOULD repeat the validators but need not: keep the recorded ones for the next resume.
        if (fresh.etag === undefined && state?.etag !== undefined) fresh.etag = state.etag;
        if (fresh.lastModified === undefined && state?.lastModified !== undefined) fresh.lastModified = state.lastModified;
        start = offset;
        total = range.total;
        // A 206 from byte 0 (some servers answer every request with a range) resumes nothing.
        if (offset > 0) {
          this.#resumed = true;
          tracker.skipTo(offset, `resuming at ${formatBytes(offset)}`);
        }
      } else {
        const length = res.headers.get('content-length');
        total = length === null ? undefined : Number(length);
        if (offset > 0) {
          const changed = state === undefined ? undefined : describeChange(state, fresh, total);
          tracker.set(0, `${changed ?? 'the server ignored the Range request'}; restarting from zero`);
          // Another file: a fresh start. The same one again (Range ignored): no progress, so the count goes on.
          if (changed !== undefined) this.#largest = 0;
        }
      }
      if (total !== undefined) fresh.total = total;
      const body = bodyChunks(res);
      // A new body from the first byte: look at its start before anything on disk is given up for it.
      const first = start === 0 ? await this.#nextChunk(body, idle, 0) : undefined;
      if (first?.done === true) {
        cancel(res);
        throw new TransientError(`the server sent an empty body${offset > 0 ? `; the ${formatBytes(offset)} of the partial file are kept` : ''}`);
      }
      if (first !== undefined && !first.done) {
        const head = first.value.subarray(0, 32).toString('latin1').replace(/[^\x20-\x7e]/g, '.');
        const type = res.headers.get('content-type');
        // A page, whatever its Content-Type says (servers label zips text/html too); and where a partial download
        // would be given up for it, anything that does not start like a zip (a self-extracting one only fresh).
        const page = /^(\xef\xbb\xbf)?\s*</.test(first.value.subarray(0, 64).toString('latin1'));
        if (page || (offset > 0 && first.value.length >= 4 && !isZipStart(first.value))) {
          cancel(res);
          const typed = type !== null ? `, Content-Type ${quote(type)}` : '';
          throw this.#notAnArchive(page ? `an HTML or XML page (it starts with ${quote(head)}${typed})` : `a file that starts with ${quote(head)}${typed}`, offset);
        }
      }
      if (total !== undefined) {
        try {
          if (total > this.#s.maxBytes) throw this.#tooLong(`declares ${total} bytes, more than the limit of ${this.#s.maxBytes}`);
          await this.#checkFreeSpace(total, offset);
        } catch (err) {
          cancel(res);
          throw err;
        }
      }
      tracker.setTotal(total);
      try {
        // Empty the .part first: killed in between, old bytes must never sit under the new validators.
        if (start === 0) await this.#truncate();
        await writeJsonAtomic(this.#statePath, fresh);
        await this.#ensureHash(start);
      } catch (err) {
        cancel(res);
        throw this.#writeError(err, start);
      }
      const size = await this.#writeBody(res, body, first, start, idle);
      if (total !== undefined && size < total) {
        throw new TransientError(`the connection closed after ${size} of ${total} bytes`);
      }
      if (total !== undefined && size > total) {
        const bad = await this.#setAside();
        throw new IntegrityError(
          `Download of ${quote(shown)} is ${size} bytes, expected ${total}; the file was kept as ${quote(bad)}`,
          { expected: String(total), actual: String(size), path: bad },
        );
      }
      return { size, lengthKnown: total !== undefined };
    } finally {
      idle.clear();
    }
  }

  /**
   * The GET request. With credentials, redirects are followed here: the Authorization header goes to the URL's own
   * origin only (node-fetch would keep it for its subdomains and other ports), and is dropped from the first redirect to
   * another origin on.
   */
  async #request(headers: Record<string, string>, signal: AbortSignal): Promise<Response> {
    const { url, fetch, agent, authorization } = this.#s;
    const init = { headers, signal, agent, compress: false } as const;
    return authorization === undefined ? fetch(url, init) : fetchOwnOrigin(fetch, url, init, authorization);
  }

  /**
   * Refuses a body that cannot fit: `total` bytes in all, of which the .part holds `offset` now (kept on a resume, given
   * up on a restart: either way the space is there). Skipped where the file system cannot tell its free space.
   */
  async #checkFreeSpace(total: number, offset: number): Promise<void> {
    const free = await freeBytes(this.#s.outDir);
    if (free === undefined) return;
    const rest = Math.max(0, total - offset);
    const margin = Math.min(FREE_SPACE_MARGIN, Math.ceil(rest / 100));
    if (free >= rest + margin) return;
    const kept = offset > 0 ? `; the partial file ${quote(this.#partPath)} (${formatBytes(offset)}) is kept` : '';
    throw new FetchError(
      `Not enough free space in ${quote(this.#s.outDir)} for ${this.#s.name}: ${formatBytes(rest + margin)} needed (${formatBytes(rest)} still to ` +
        `download and a margin of ${formatBytes(margin)}), ${formatBytes(free)} free; make room or choose another downloads folder ` +
        `(--out or --data-dir; PNEUMOTYPE_DATA_DIR in the notebooks), then run again${kept}`,
      { url: this.#s.shown, path: this.#s.outDir },
    );
  }

  /** The refusal of a body longer than maxBytes (`what`: how it showed), the partial file kept. */
  #tooLong(what: string): FetchError {
    return new FetchError(
      `${quote(this.#s.shown)} ${what} (maxBytes, ${formatBytes(this.#s.maxBytes)}): ` +
        `not a dataset archive, or a larger one than expected; give a higher maxBytes (fetch --max-bytes) to download it${this.#keptNote()}`,
      { url: this.#s.shown },
    );
  }

  /** "; the partial file ... is kept for resuming" when there is one with bytes in it, else nothing. */
  #keptNote(): string {
    let size = 0;
    try {
      size = statSync(this.#partPath, { throwIfNoEntry: false })?.size ?? 0;
    } catch {
      size = 0;
    }
    return size > 0 ? `; the partial file ${quote(this.#partPath)} is kept for resuming` : '';
  }

  /** The body's next chunk; a broken connection is a TransientError saying how far it got. */
  async #nextChunk(body: AsyncIterator<Buffer>, idle: IdleTimer, position: number): Promise<IteratorResult<Buffer>> {
    try {
      const next = await body.next();
      idle.touch();
      return next;
    } catch (err) {
      throw this.#networkError(err, idle, `the connection broke after ${position} bytes`);
    }
  }

  /** Writes the body from `start` on (its `first` chunk already read), hashing as it goes. */
  async #writeBody(res: Response, body: AsyncIterator<Buffer>, first: IteratorResult<Buffer> | undefined, start: number, idle: IdleTimer): Promise<number> {
    const handle = await open(this.#partPath, 'r+');
    let position = start;
    let finished = false;
    try {
      for (let next = first ?? (await this.#nextChunk(body, idle, position)); ; next = await this.#nextChunk(body, idle, position)) {
        if (next.done) {
          finished = true;
          break;
        }
        const chunk = next.value;
        try {
          await writeAll(handle, chunk, position);
        } catch (err) {
          throw this.#writeError(err, position);
        }
        this.#hash?.update(chunk);
        position += chunk.length;
        this.#hashed = position;
        this.#s.tracker.set(position);
        if (position > this.#s.maxBytes) throw this.#tooLong(`sent more than the limit of ${this.#s.maxBytes} bytes without saying its length`);
      }
    } finally {
      await handle.close();
      if (!finished) cancel(res);
    }
    return position;
  }

  /** Moves the finished but bad download to `NAME.bad` (never deleted) and forgets its record; returns where it went. */
  async #setAside(): Promise<string> {
    const bad = await moveAside(this.#partPath, `${this.#s.finalPath}.bad`);
    await rm(this.#statePath, { force: true });
    return bad;
  }

  /** A file-system error while writing the download (a full disk, say): the `kept` bytes so far are good. */
  #writeError(err: unknown, kept: number): Error {
    if (err instanceof PneumotypeError || typeof (err as NodeJS.ErrnoException | undefined)?.code !== 'string') return err as Error;
    return new FetchError(
      `Cannot write ${quote(this.#partPath)} (${messageOf(err)}): the ${formatBytes(kept)} downloaded so far are kept; ` +
        'make room and run again to resume',
      { url: this.#s.shown, path: this.#partPath, cause: err },
    );
  }

  /** The error for a response that is not the archive; a partial download from before is kept. */
  #notAnArchive(what: string, offset: number): FetchError {
    const kept = offset > 0 ? `; the partial file ${quote(this.#partPath)} (${formatBytes(offset)}) is kept` : '';
    return new FetchError(
      `${quote(this.#s.shown)} answered with ${what}, not a zip archive: a captive portal, a login or an error page? ` +
        `Open the URL in a browser, then run again${kept}`,
      { url: this.#s.shown },
    );
  }

  async #finish(outcome: Complete): Promise<{ bytes: number; sha256: string; resumed: boolean }> {
    const { shown: url, finalPath, name, expected, tracker } = this.#s;
    const zipEnd = await endsLikeZip(this.#partPath, outcome.size);
    if (!zipEnd && !outcome.lengthKnown) {
      // A body cut where the server gave no length looks complete until here: resume it.
      throw new TransientError(`the download ends after ${outcome.size} bytes without a zip archive's end (its central directory): it was cut short`);
    }
    await this.#ensureHash(outcome.size);
    const actual = (this.#hash as Hash).digest('hex');
    this.#hash = undefined;
    if (expected !== undefined && actual !== expected) {
      const bad = await this.#setAside();
      throw new IntegrityError(`SHA-256 of ${quote(url)} is ${actual}, expected ${expected}; the download was kept as ${quote(bad)}`, {
        expected,
        actual,
        path: bad,
      });
    }
    if (!zipEnd && expected === undefined) {
      // All the bytes the server announced, and still no zip (a given SHA-256 that matches vouches for the file).
      const bad = await this.#setAside();
      throw new IntegrityError(
        `Download of ${quote(url)} is complete (${outcome.size} bytes, the length the server gave) but is not a whole zip archive ` +
          `(no end of central directory record at its end); the file was kept as ${quote(bad)}`,
        { expected: 'a zip archive', actual: `${outcome.size} bytes without a zip end`, path: bad },
      );
    }
    // The bytes on disk before the name and the record that vouch for them (renames can reach the disk first).
    const handle = await open(this.#partPath, 'r+');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(this.#partPath, finalPath);
    await writeShaRecord(finalPath, name, actual, this.#s.recordAs);
    await rm(this.#statePath, { force: true });
    tracker.setTotal(outcome.size);
    tracker.finish(`saved ${name} (${formatBytes(outcome.size)})`);
    return { bytes: outcome.size, sha256: actual, resumed: this.#resumed };
  }

  /** Makes #hash cover exactly the part's first `bytes` bytes, hashing from disk when this call did not write them. */
  async #ensureHash(bytes: number): Promise<void> {
    if (this.#hash !== undefined && this.#hashed === bytes) return;
    this.#hash = createHash('sha256');
    this.#hashed = 0;
    if (bytes > 0) {
      for await (const chunk of createReadStream(this.#partPath, { start: 0, end: bytes - 1, highWaterMark: 1 << 20 })) {
        this.#hash.update(chunk as Buffer);
      }
    }
    this.#hashed = bytes;
  }

  async #truncate(): Promise<void> {
    const handle = await open(this.#partPath, 'w');
    await handle.close();
    this.#hash = createHash('sha256');
    this.#hashed = 0;
  }

  async #readState(): Promise<PartState | undefined> {
    try {
      const value = JSON.parse(await readFile(this.#statePath, 'utf8')) as Partial<PartState>;
      if (typeof value.url !== 'string') return undefined;
      const state: PartState = { url: value.url };
      if (typeof value.etag === 'string') state.etag = value.etag;
      if (typeof value.lastModified === 'string') state.lastModified = value.lastModified;
      if (typeof value.total === 'number') state.total = value.total;
      return state;
    } catch {
      return undefined;
    }
  }

  #networkError(err: unknown, idle: IdleTimer, what = 'the request failed'): Error {
    this.#throwIfAborted();
    const { shown } = this.#s;
    // Ours already (a proxy variable refused for a redirect's URL): final as it is.
    if (err instanceof PneumotypeError) return err;
    if (isRedirectLoop(err)) {
      return new FetchError(`Cannot download ${quote(shown)}: ${maskUserInfo(messageOf(err))} (a redirect loop?)`, { url: shown, cause: err });
    }
    if (idle.timedOut) return new TransientError(`no data for ${formatSeconds(this.#s.timeoutMs)}`, { cause: err });
    // Permanent: the same handshake fails the same way on every retry.
    if (isCertificateError(err)) {
      return new FetchError(
        `Cannot download ${quote(shown)}: its TLS certificate is not trusted (${certificateCode(err)}); if a proxy or firewall on this ` +
          'network inspects TLS (a corporate proxy), give its CA certificate with NODE_EXTRA_CA_CERTS=/path/to/ca.pem and run again',
        { url: shown, cause: err },
      );
    }
    // A request that cannot be made at all (a URL or header the client refuses, a redirect to an invalid URL).
    if (isRequestRefused(err) || (err as { type?: unknown } | undefined)?.type === 'invalid-redirect') {
      return new FetchError(`Cannot download ${quote(shown)}: ${maskUserInfo(messageOf(err))}`, { url: shown, cause: err });
    }
    return new TransientError(`${what} (${maskUserInfo(messageOf(err))})`, { cause: err });
  }

  #throwIfAborted(): void {
    const signal = this.#s.signal;
    if (signal?.aborted) {
      throw new FetchError(`Download of ${quote(this.#s.shown)} was aborted${this.#keptNote()}`, {
        url: this.#s.shown,
        cause: signal.reason,
      });
    }
  }
}

/**
 * The dataset as `relabel` reads it: a source that names a folder (an archive extracted by other means) is taken as
 * it is, with nothing to fetch; any other source goes to {@link fetchDataset}. For the notebooks, whose
 * PNEUMOTYPE_SOURCE may be either, as `pneumotype run --source` may.
 *
 * @example const data = await obtainDataset({ source: nb.source, outDir: nb.downloadsDir }); await relabel({ from: data.path, out: 'data/labeled' })
 */
export async function obtainDataset(options: FetchOptions = {}): Promise<ObtainedDataset> {
  const source = sourceOf(options);
  const resolved = resolveSource(source);
  if (resolved.kind === 'path' && (await stat(resolved.path)).isDirectory()) return { kind: 'folder', path: resolved.path, source };
  return { kind: 'archive', ...(await fetchDataset(options)) };
}

/** The source fetchDataset and obtainDataset read: the option, else PNEUMOTYPE_SOURCE (empty counts as unset), else the default. */
function sourceOf(options: FetchOptions): string {
  return options.source ?? ((options.env ?? process.env).PNEUMOTYPE_SOURCE || undefined) ?? DEFAULTS.source;
}

/** Local path source: verified, never copied, moved or deleted. */
async function verifyLocal(path: string, source: string, expected: string | undefined, tracker: ProgressTracker): Promise<FetchResult> {
  const s = await stat(path);
  if (s.isDirectory()) {
    throw new ConfigError(
      `Dataset source ${quote(path)} is a folder: fetch takes a zip archive; an extracted copy needs no fetch: give it to ` +
        '`relabel --from`, as the source of `run` or to `obtainDataset` (the notebooks\' PNEUMOTYPE_SOURCE), which read it as it is',
      { path },
    );
  }
  if (!s.isFile()) throw new ConfigError(`Dataset source ${quote(path)} is not a file: expected a zip archive`, { path });
  // Before a long hash: the end record every zip has (also behind a self-extracting stub) and a download cut short
  // lacks; a file that is no zip at all lacks it too.
  if (!(await endsLikeZip(path, s.size))) {
    throw new ArchiveError(
      `Dataset source ${quote(path)} is not a complete zip archive (it has no end of central directory record: not a zip, ` +
        "or cut short): expected the dataset's zip or a copy in its layout",
      { path },
    );
  }
  tracker.setTotal(s.size);
  const actual = await hashFile(path, s.size, tracker);
  if (expected !== undefined && actual !== expected) {
    throw new IntegrityError(`SHA-256 of ${quote(path)} is ${actual}, expected ${expected}`, { expected, actual, path });
  }
  tracker.finish(`using local file ${path}`);
  return { path, bytes: s.size, sha256: actual, source, resumed: false, downloaded: false };
}

async function hashFile(path: string, size: number, tracker: ProgressTracker): Promise<string> {
  const hash = createHash('sha256');
  let done = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    done += (chunk as Buffer).length;
    tracker.set(Math.min(done, size));
  }
  return hash.digest('hex');
}

// ---------------------------------------------------------------------------------------------------------------
// Small shared pieces (also used by lib/http-range.ts)

/**
 * A failure worth retrying: network error, cut body, idle timeout, HTTP 408/429/5xx. Internal to the retry loops;
 * callers only ever see the FetchError it becomes when retries run out.
 *
 * @example throw new TransientError('HTTP 503 Service Unavailable', { status: 503, retryAfterMs: 2000 })
 */
export class TransientError extends Error {
  readonly status: number | undefined;
  readonly retryAfterMs: number | undefined;
  constructor(message: string, details: { status?: number; retryAfterMs?: number | undefined; cause?: unknown } = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'TransientError';
    this.status = details.status;
    this.retryAfterMs = details.retryAfterMs;
  }
}

/**
 * True for node-fetch's error when a URL redirects more than it follows (20): a loop, not worth retrying.
 *
 * @example if (isRedirectLoop(err)) throw new FetchError(...)
 */
export function isRedirectLoop(err: unknown): boolean {
  return (err as { type?: unknown } | undefined)?.type === 'max-redirect';
}

/**
 * HTTP statuses retried with backoff: 408, 429 and every 5xx.
 *
 * @example isTransientStatus(503) // true; isTransientStatus(404) // false
 */
export function isTransientStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status <= 599);
}

/**
 * Milliseconds to wait before retry number `attempt` (1-based): `backoffMs * 2^(attempt-1)`, scaled by a random
 * factor in [0.5, 1.5) so that many clients do not retry in lockstep.
 *
 * @example backoffDelay(1000, 3, () => 0.5) // 4000
 */
export function backoffDelay(backoffMs: number, attempt: number, random: () => number = Math.random): number {
  return Math.round(backoffMs * 2 ** Math.max(0, attempt - 1) * (0.5 + random()));
}

/**
 * A Retry-After header in ms: delta-seconds or an HTTP date; undefined when absent or unreadable.
 *
 * @example parseRetryAfter('3') // 3000
 */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/**
 * `Content-Range: bytes a-b/total` parsed; undefined unless well-formed with a known total.
 *
 * @example parseContentRange('bytes 100-199/1000') // { start: 100, end: 199, total: 1000 }
 */
export function parseContentRange(value: string | null): { start: number; end: number; total: number } | undefined {
  const m = value === null ? null : /^bytes\s+(\d+)-(\d+)\/(\d+)$/i.exec(value.trim());
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), total: Number(m[3]) };
}

function contentRangeTotal(value: string | null): number | undefined {
  const m = value === null ? null : /\/(\d+)\s*$/.exec(value);
  return m ? Number(m[1]) : undefined;
}

/** What changed between the recorded validators and a response's, or undefined when nothing did. */
function describeChange(before: PartState, after: PartState, total: number | undefined): string | undefined {
  if (before.etag !== undefined && after.etag !== undefined && before.etag !== after.etag) {
    return `the file changed on the server (ETag ${before.etag} is now ${after.etag})`;
  }
  if (before.lastModified !== undefined && after.lastModified !== undefined && before.lastModified !== after.lastModified) {
    return `the file changed on the server (Last-Modified ${before.lastModified} is now ${after.lastModified})`;
  }
  if (before.total !== undefined && total !== undefined && before.total !== total) {
    return `the file changed on the server (length ${before.total} is now ${total})`;
  }
  return undefined;
}

/**
 * An AbortSignal that fires when nothing arrived for `ms` (call touch() on every chunk) or when `parent` aborts.
 *
 * @example
 * const idle = new IdleTimer(60_000, signal);
 * try { const res = await fetch(url, { signal: idle.signal }); for await (const c of res.body!) idle.touch() } finally { idle.clear() }
 */
export class IdleTimer {
  readonly signal: AbortSignal;
  timedOut = false;
  readonly #controller = new AbortController();
  readonly #ms: number;
  #timer: NodeJS.Timeout | undefined;

  constructor(ms: number, parent?: AbortSignal) {
    this.#ms = ms;
    this.signal = parent ? AbortSignal.any([parent, this.#controller.signal]) : this.#controller.signal;
    this.touch();
  }

  /** Restarts the countdown (data arrived, or the consumer is ready for more). */
  touch(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.timedOut = true;
      this.#controller.abort(new Error(`no data for ${this.#ms} ms`));
    }, this.#ms);
  }

  /** Stops the countdown (while a slow consumer, not the server, holds things up); touch() restarts it. */
  clear(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/**
 * Waits `ms`, rejecting early when the signal aborts.
 *
 * @example await sleep(backoffDelay(1000, 2), signal)
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Drops a response body we will not read, so the socket is released.
 *
 * @example if (res.status !== 206) cancel(res)
 */
export function cancel(res: Response): void {
  const body = res.body as (NodeJS.ReadableStream & { destroy?: () => void }) | null;
  body?.destroy?.();
}

/** The validators (ETag, Last-Modified) a response carries, as a part's state for `url`. */
function validatorsOf(res: Response, url: string): PartState {
  const state: PartState = { url };
  const etag = res.headers.get('etag');
  const lastModified = res.headers.get('last-modified');
  if (etag !== null) state.etag = etag;
  if (lastModified !== null) state.lastModified = lastModified;
  return state;
}

/** A response body as an iterator of Buffers (an empty one for a body-less response). */
function bodyChunks(res: Response): AsyncIterator<Buffer> {
  const body = res.body as AsyncIterable<Buffer> | null;
  return body === null ? [][Symbol.iterator]() as unknown as AsyncIterator<Buffer> : body[Symbol.asyncIterator]();
}

/** True when bytes start as a zip archive does: "PK" and a local file header, an empty archive's end, or a span marker. */
function isZipStart(head: Uint8Array): boolean {
  return head[0] === 0x50 && head[1] === 0x4b && (head.length < 4 || [0x0403, 0x0605, 0x0807, 0x3030].includes((head[2] ?? 0) | ((head[3] ?? 0) << 8)));
}

/**
 * True when the file's last 64 KiB hold a zip's end of central directory record (its signature, with a comment that
 * fits the file): what a download cut short lacks.
 */
async function endsLikeZip(path: string, size: number): Promise<boolean> {
  const EOCD = 22;
  if (size < EOCD) return false;
  const length = Math.min(size, EOCD + 0xffff);
  const tail = Buffer.alloc(length);
  const handle = await open(path, 'r');
  try {
    await handle.read(tail, 0, length, size - length);
  } finally {
    await handle.close();
  }
  for (let i = length - EOCD; i >= 0; i--) {
    if (tail.readUInt32LE(i) === 0x06054b50 && i + EOCD + tail.readUInt16LE(i + 20) === length) return true;
  }
  return false;
}

async function writeAll(handle: FileHandle, chunk: Buffer, position: number): Promise<void> {
  let written = 0;
  while (written < chunk.length) {
    const { bytesWritten } = await handle.write(chunk, written, chunk.length - written, position + written);
    written += bytesWritten;
  }
}

/** Renames `path` to the first free name among `base`, `base.1`, `base.2`, ... and returns it. Nothing is deleted. */
async function moveAside(path: string, base = `${path}.bad`): Promise<string> {
  for (let i = 0; ; i++) {
    const candidate = i === 0 ? base : `${base}.${i}`;
    if (!existsSync(candidate)) {
      await rename(path, candidate);
      return candidate;
    }
  }
}

/**
 * `NAME.sha256`: the digest line `sha256sum -c` reads, then `# source: URL` (a comment to sha256sum), the URL as
 * requested with any user name and password shown as `***`. Records written before the URL was recorded have no such
 * line: `url` is then undefined.
 */
async function readShaRecord(path: string): Promise<{ digest: string | undefined; url: string | undefined } | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
  const digest = /^([0-9a-f]{64})\b/i.exec(text)?.[1]?.toLowerCase();
  const url = /^# source: (\S+)\s*$/m.exec(text)?.[1];
  return { digest, url };
}

async function writeShaRecord(finalPath: string, name: string, digest: string, source: string): Promise<void> {
  await writeFileAtomic(`${finalPath}.sha256`, `${digest}  ${name}\n# source: ${source}\n`);
}

/** True when a record's source (a known source's name or a URL) names `source` (likewise): names stand for their URLs. */
function sameSource(recorded: string, source: string): boolean {
  const urlOf = (s: string): string => (s === 'v2' || s === 'v3' ? SOURCES[s].url : s);
  return recorded === source || sameUrl(urlOf(recorded), urlOf(source));
}

/** Redirects followed (node-fetch's own default). */
const MAX_REDIRECTS = 20;

/**
 * A request whose `authorization` (a URL's user name and password) goes to the URL's own origin only: redirects within
 * it are followed here, the first to another origin is handed to `fetch` without it (node-fetch would keep it for other
 * ports of the host and its subdomains). Too many redirects: node-fetch's own 'max-redirect' error.
 */
export async function fetchOwnOrigin(
  fetch: FetchFn,
  url: string,
  init: NonNullable<Parameters<FetchFn>[1]> & { headers: Record<string, string> },
  authorization: string,
): Promise<Response> {
  const origin = new URL(url).origin;
  let current = url;
  for (let hops = 0; ; hops++) {
    const res = await fetch(current, { ...init, headers: { ...init.headers, authorization }, redirect: 'manual' });
    const location = res.headers.get('location');
    if (![301, 302, 303, 307, 308].includes(res.status) || location === null) return res;
    cancel(res);
    if (hops >= MAX_REDIRECTS) throw Object.assign(new Error(`maximum redirect reached at: ${current}`), { type: 'max-redirect' });
    const next = new URL(location, current);
    if (next.origin !== origin) return fetch(next.href, { ...init, follow: MAX_REDIRECTS - hops - 1 });
    current = next.href;
  }
}

/** Room kept free beyond the download itself: 1 % of what is still to come, at most 64 MiB. */
const FREE_SPACE_MARGIN = 64 * 1024 * 1024;

/** Bytes free to this user on the file system holding `dir`; undefined where that cannot be told. */
async function freeBytes(dir: string): Promise<number | undefined> {
  if (typeof statfs !== 'function') return undefined;
  try {
    const s = await statfs(dir);
    const free = Number(s.bavail) * Number(s.bsize);
    return Number.isFinite(free) && free >= 0 ? free : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A URL without its user name and password (`url`, for requests), the same shown with `***@` in their place (`shown`,
 * for messages and records), and the Basic Authorization header they make (undefined when there are none).
 *
 * @example splitCredentials('https://al:pw@example.org/a.zip') // { url: 'https://example.org/a.zip', shown: 'https://***@example.org/a.zip', authorization: 'Basic YWw6cHc=' }
 */
export function splitCredentials(href: string): { url: string; shown: string; authorization: string | undefined } {
  const u = new URL(href);
  if (u.username === '' && u.password === '') return { url: href, shown: withoutSignature(href), authorization: undefined };
  const user = decodeComponent(u.username);
  const password = decodeComponent(u.password);
  u.username = '';
  u.password = '';
  const url = u.href;
  return { url, shown: withoutSignature(url).replace('//', '//***@'), authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` };
}

/** Errors that mean the host cannot be reached at all (no network, no name service, nothing listening). */
const UNREACHABLE = /\b(ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ENETUNREACH|EHOSTUNREACH)\b/;

/** The URL with the values of its signature parameters (see SIGNATURE_PARAMETER) shown as `***`: a presigned link is a secret. */
function withoutSignature(href: string): string {
  const q = href.indexOf('?');
  if (q < 0) return href;
  const hash = href.indexOf('#', q);
  const query = href.slice(q + 1, hash < 0 ? undefined : hash);
  const masked = query.split('&').map((pair) => {
    const eq = pair.indexOf('=');
    let key = eq < 0 ? pair : pair.slice(0, eq);
    try {
      key = decodeURIComponent(key);
    } catch {
      // as written
    }
    if (eq >= 0 && SIGNATURE_PARAMETER.test(key)) return `${pair.slice(0, eq)}=***`;
    return eq >= 0 && TOKEN_PARAMETER.test(key) ? `${pair.slice(0, eq)}=${maskedToken(pair.slice(eq + 1))}` : pair;
  });
  return `${href.slice(0, q + 1)}${masked.join('&')}${hash < 0 ? '' : href.slice(hash)}`;
}

/**
 * A URL as messages and records show it: its user name and password as `***` (anything that is no URL as it is).
 *
 * @example shownUrl('https://al:pw@example.org/a.zip') // 'https://***@example.org/a.zip'
 */
export function shownUrl(href: string): string {
  try {
    return splitCredentials(href).shown;
  } catch {
    return href;
  }
}

function decodeComponent(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/**
 * Text with the user name and password of every URL in it (`scheme://user:pass@`) shown as `***@`, and the values of
 * presigned links' signature parameters as `***`; with `bare`, also the user and password of a proxy given without its
 * scheme (`user:pass@host:3128`).
 *
 * @example maskUserInfo('socks5://bob:pw@proxy:1080') // 'socks5://***@proxy:1080'
 */
export function maskUserInfo(text: string, bare = false): string {
  // Signatures of presigned links too: node-fetch's own messages quote the URL as it was requested.
  const masked = text
    .replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^/?#\s"]*@/gi, '$1***@')
    .replace(new RegExp(`([?&](?:${SIGNATURE_NAMES})=)[^&#\\s"']*`, 'gi'), '$1***')
    .replace(new RegExp(`([?&](?:${TOKEN_NAMES})=)([^&#\\s"']*)`, 'gi'), (_all, key: string, value: string) => `${key}${maskedToken(value)}`);
  return bare ? masked.replace(/^(?![a-z][a-z0-9+.-]*:\/\/)[^/?#\s"]*@/i, '***@') : masked;
}

/**
 * True when two URLs name the same file: compared without user names and passwords (a `***` record matches the URL it
 * was made from), fragments (never sent), the query's order, and the parameters that only sign or expire a link
 * (a presigned URL signed anew names the same object).
 *
 * @example sameUrl('https://b.s3.amazonaws.com/a.zip?X-Amz-Signature=1&x=2', 'https://b.s3.amazonaws.com/a.zip?x=2&X-Amz-Signature=9') // true
 */
export function sameUrl(a: string, b: string): boolean {
  return comparableUrl(a) === comparableUrl(b);
}

/**
 * Query parameters that carry an access token (`?access_token=ghp_…`): a secret, but not one that changes each time a
 * link is made, and on some hosts the only thing that tells two files apart. Shown as `***` and the first 8 hex digits
 * of its SHA-256 (see maskedToken), so records stay comparable and say nothing usable.
 */
const TOKEN_NAMES = 'token|access_token|accesstoken|api_key|apikey|auth_token';
const TOKEN_PARAMETER = new RegExp(`^(${TOKEN_NAMES})$`, 'i');

/**
 * A token's value as shown: `***` and 8 hex digits of the SHA-256 of its decoded form (`raw`: as it stands in a query
 * string, still encoded); a value shown so already stays as it is.
 */
function maskedToken(value: string, raw = true): string {
  if (/^\*\*\*[0-9a-f]{8}$/.test(value)) return value;
  let decoded = value;
  try {
    if (raw) decoded = decodeURIComponent(value.replace(/\+/g, ' '));
  } catch {
    // as written
  }
  return `***${createHash('sha256').update(decoded).digest('hex').slice(0, 8)}`;
}

/**
 * Query parameters that are a presigned link's secret (S3, GCS, CloudFront, Azure's `sig`), or a password (too easy to
 * guess from a digest): shown as `***`, not compared.
 */
const SIGNATURE_NAMES = 'x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential|signature|sig|password|passwd|secret|auth';
const SIGNATURE_PARAMETER = new RegExp(`^(${SIGNATURE_NAMES})$`, 'i');

/** Query parameters that bound a presigned link's life or describe its signing: not compared, as the file is the same. */
const VALIDITY_PARAMETER = /^(x-amz-date|x-amz-expires|x-amz-algorithm|x-amz-signedheaders|x-goog-date|x-goog-expires|x-goog-algorithm|x-goog-signedheaders|expires|key-pair-id|policy)$/i;

/** Azure's shared-access parameters: not compared in a link that carries Azure's `sig` (elsewhere they may name the file). */
const AZURE_SAS_PARAMETER = /^(se|st|sp|sv|sr|spr|srt|ss|skoid|sktid|skt|ske|sks|skv)$/i;

function comparableUrl(href: string): string {
  try {
    const u = new URL(href);
    u.username = '';
    u.password = '';
    u.hash = '';
    const azure = [...u.searchParams.keys()].some((k) => k.toLowerCase() === 'sig');
    const ignored = (k: string): boolean => SIGNATURE_PARAMETER.test(k) || VALIDITY_PARAMETER.test(k) || (azure && AZURE_SAS_PARAMETER.test(k));
    const kept = [...u.searchParams].filter(([k]) => !ignored(k)).map(([k, v]): [string, string] => [k, TOKEN_PARAMETER.test(k) ? maskedToken(v, false) : v]).sort(([a, x], [b, y]) => (a === b ? (x < y ? -1 : x > y ? 1 : 0) : a < b ? -1 : 1));
    u.search = new URLSearchParams(kept).toString();
    return u.href;
  } catch {
    return href;
  }
}

/** OpenSSL's and Node's codes for a certificate that was not accepted (untrusted, expired, for another name...). */
const CERTIFICATE_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_CHAIN_TOO_LONG',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'PATH_LENGTH_EXCEEDED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_TLS_CERT_ALTNAME_FORMAT',
]);

/** The certificate code of `err` or of an error it wraps (`cause`, a few levels deep), if any. */
function certificateCode(err: unknown): string | undefined {
  for (const e of causeChain(err)) {
    const code = (e as { code?: unknown } | undefined)?.code;
    if (typeof code === 'string' && CERTIFICATE_CODES.has(code)) return code;
  }
  return undefined;
}

/**
 * True for a request the client refuses to make (an invalid URL or header: node-fetch's TypeErrors), the same on every
 * try. Not every TypeError: a WHATWG fetch given as `fetch` reports any network failure as "TypeError: fetch failed".
 *
 * @example isRequestRefused(new TypeError('Invalid URL')) // true
 */
export function isRequestRefused(err: unknown): boolean {
  if (!(err instanceof TypeError)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && /^ERR_(INVALID_URL|INVALID_HTTP_TOKEN|INVALID_CHAR|HTTP_INVALID_HEADER_VALUE|INVALID_ARG_TYPE|INVALID_ARG_VALUE)$/.test(code)) return true;
  return /invalid url|only absolute urls|embedded credentials|invalid header|not a legal http header|header (name|value)|url scheme .* is not supported/i.test(err.message);
}

/**
 * True for a TLS certificate that was not accepted (self-signed, unknown CA, expired, for another host name): the same
 * on every retry, so final. node-fetch copies the code of the socket's error to its own.
 *
 * @example isCertificateError(Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' })) // true
 */
export function isCertificateError(err: unknown): boolean {
  return certificateCode(err) !== undefined;
}

function normalizeSha(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const v = value.trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(v)) throw new ConfigError(`SHA-256 ${quote(value)} is not 64 hexadecimal digits`);
  return v;
}

/**
 * The URL's last path segment, decoded, or 'download.zip' when it has none usable.
 *
 * @example fileNameFromUrl('https://example.org/files/Chest%20X.zip?dl=1') // 'Chest X.zip'
 */
export function fileNameFromUrl(url: string): string {
  const segment = new URL(url).pathname.split('/').pop() ?? '';
  let name: string;
  try {
    name = decodeURIComponent(segment);
  } catch {
    name = segment;
  }
  return name === '' || name === '.' || name === '..' || /[/\\\0]/.test(name) ? 'download.zip' : name;
}

function checkFileName(name: string): void {
  if (name === '' || name === '.' || name === '..' || /[/\\\0]/.test(name)) {
    throw new ConfigError(`File name ${quote(name)} is not a plain file name: expected a name without folders`);
  }
}

function formatSeconds(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${Math.round(ms / 100) / 10} s`;
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  if (n < 1024 ** 4) return `${(n / 1024 ** 3).toFixed(2)} GiB`;
  return `${(n / 1024 ** 4).toFixed(2)} TiB`;
}

// ---------------------------------------------------------------------------------------------------------------
// Proxies

const LOOPBACK = new Set(['localhost', '127.0.0.1', '::1', '[::1]']);

/**
 * The proxy URL to use for `url` under `env` (HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, lowercase first), or undefined
 * for a direct connection: loopback hosts and NO_PROXY matches (`*`, `host`, `.domain`, `*.domain`, optional `:port`)
 * never go through a proxy. Pure: reads only its arguments.
 *
 * @example
 * proxyFor('https://data.mendeley.com/x.zip', { HTTPS_PROXY: 'http://proxy:3128' }) // 'http://proxy:3128'
 * proxyFor('http://127.0.0.1:8080/x.zip', { HTTP_PROXY: 'http://proxy:3128' }) // undefined
 */
export function proxyFor(url: string, env: Readonly<Record<string, string | undefined>>): string | undefined {
  const setting = proxySetting(url, env);
  if (setting === undefined) return undefined;
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(setting.value) ? setting.value : `http://${setting.value}`;
}

/** The variable (name as set) and value that {@link proxyFor} takes for `url`, or undefined. */
function proxySetting(url: string, env: Readonly<Record<string, string | undefined>>): { name: string; value: string } | undefined {
  const target = new URL(url);
  const host = target.hostname.toLowerCase().replace(/^\[|\]$/g, '');
  if (LOOPBACK.has(host) || /^127\.\d+\.\d+\.\d+$/.test(host) || host.endsWith('.localhost')) return undefined;
  const port = target.port || (target.protocol === 'https:' ? '443' : '80');
  const noProxy = pick(env, 'no_proxy', 'NO_PROXY');
  if (noProxy !== undefined && matchesNoProxy(host, port, noProxy.value)) return undefined;
  return target.protocol === 'https:'
    ? (pick(env, 'https_proxy', 'HTTPS_PROXY') ?? pick(env, 'all_proxy', 'ALL_PROXY'))
    : target.protocol === 'http:'
      ? (pick(env, 'http_proxy', 'HTTP_PROXY') ?? pick(env, 'all_proxy', 'ALL_PROXY'))
      : undefined;
}

function pick(env: Readonly<Record<string, string | undefined>>, ...names: string[]): { name: string; value: string } | undefined {
  for (const name of names) {
    const value = env[name]?.trim();
    if (value) return { name, value };
  }
  return undefined;
}

/**
 * Throws a ConfigError when the proxy {@link proxyFor} takes for `url` cannot be used: the agents speak HTTP to the
 * proxy (CONNECT for https), so a SOCKS proxy (ALL_PROXY=socks5://...) would only fail, slowly, on every retry.
 */
function checkProxy(url: string, env: Readonly<Record<string, string | undefined>>): void {
  const setting = proxySetting(url, env);
  if (setting === undefined) return;
  const { name } = setting;
  const proxy = proxyFor(url, env) as string;
  const shown = quote(maskUserInfo(setting.value, true));
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(proxy)?.[1]?.toLowerCase();
  if (scheme !== 'http' && scheme !== 'https') {
    throw new ConfigError(
      `${name} ${shown} is a ${scheme ?? '?'}:// proxy: downloads go through http:// and https:// proxies only; set ${name} to an http:// or https:// proxy, or unset it`,
    );
  }
  try {
    new URL(proxy);
  } catch (err) {
    throw new ConfigError(`${name} ${shown} is not a valid proxy URL: expected http://HOST:PORT or https://HOST:PORT`, { cause: err });
  }
}

function matchesNoProxy(host: string, port: string, list: string): boolean {
  for (const raw of list.split(/[\s,]+/)) {
    let entry = raw.trim().toLowerCase();
    if (entry === '') continue;
    if (entry === '*') return true;
    let entryPort: string | undefined;
    const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(entry);
    if (m) {
      entry = m[1] as string;
      entryPort = m[2];
    }
    entry = entry.replace(/^\[|\]$/g, '');
    if (entryPort !== undefined && entryPort !== port) continue;
    if (entry.startsWith('*.')) entry = entry.slice(1);
    if (entry.startsWith('.')) {
      if (host.endsWith(entry) || host === entry.slice(1)) return true;
    } else if (host === entry || host.endsWith(`.${entry}`)) {
      return true;
    }
  }
  return false;
}

/**
 * The `agent` option for node-fetch under `env`: a function of each request's URL (redirects included) that returns
 * a proxy agent when {@link proxyFor} names a proxy, else undefined (direct). Agents are reused per proxy.
 *
 * @example await nodeFetch(url, { agent: proxyAgentFor(process.env) })
 */
export function proxyAgentFor(env: Readonly<Record<string, string | undefined>>): (url: URL) => Agent | undefined {
  const agents = new Map<string, Agent>();
  return (url) => {
    const proxy = proxyFor(url.href, env);
    if (proxy === undefined) return undefined;
    checkProxy(url.href, env); // a redirect to another scheme or host may pick another variable
    const key = `${url.protocol} ${proxy}`;
    let agent = agents.get(key);
    if (agent === undefined) {
      agent = url.protocol === 'https:' ? new HttpsProxyAgent(proxy) : new HttpProxyAgent(proxy);
      agents.set(key, agent);
    }
    return agent;
  };
}
