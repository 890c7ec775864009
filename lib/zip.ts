// Safe, streaming, resumable zip extraction with yauzl: refuses traversal, links, bombs and corrupt data.
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32 } from 'node:zlib';
import yauzl from 'yauzl';
import type { Entry, Options as YauzlOptions, ZipFile } from 'yauzl';
import { DEFAULTS } from './config.js';
import { ArchiveError, ConfigError, PneumotypeError, messageOf, quote } from './errors.js';
import { withLock } from './lock.js';
import { ProgressTracker, type ProgressCallback } from './progress.js';

/** An archive to read: a path, or a yauzl ZipFile opened elsewhere (e.g. over HTTP ranges) with a name for messages. */
export type ArchiveSource = string | { zipfile: ZipFile; name: string };

/** Options of {@link extractZip}. Limits default to DEFAULTS (maxArchiveEntries, maxExtractBytes, ...). */
export interface ExtractOptions {
  /**
   * A path, or an open ZipFile (opened with {@link ZIP_OPEN_OPTIONS}, at least `lazyEntries: true`, no entry read
   * yet). The ZipFile is consumed: its entries are read once and it is closed when extraction ends.
   */
  archive: ArchiveSource;
  /** Folder the entries are written under, with their archive paths. Default DEFAULTS.extractedDir. */
  outDir?: string | undefined;
  /** Entries to extract (default: all). Junk entries ({@link isJunkEntry}) are never extracted. */
  include?: (entryName: string) => boolean | undefined;
  /** More entries than this in the archive: refused. Default DEFAULTS.maxArchiveEntries. */
  maxEntries?: number | undefined;
  /** Sum of declared uncompressed sizes of the selected entries above this: refused. Default DEFAULTS.maxExtractBytes. */
  maxTotalBytes?: number | undefined;
  /** One entry larger than this, declared or actual: refused. Default DEFAULTS.maxEntryBytes. */
  maxEntryBytes?: number | undefined;
  /** Uncompressed/compressed above this for an entry over 1 MiB: refused. Default DEFAULTS.maxCompressionRatio. */
  maxCompressionRatio?: number | undefined;
  /** Stage 'extract', unit 'bytes': uncompressed bytes of the selected entries, written or found already present. */
  onProgress?: ProgressCallback | undefined;
  /** At most one progress event per interval. Default DEFAULTS.progressIntervalMs. */
  progressIntervalMs?: number | undefined;
  /**
   * Aborts between and within entries; the entry being written is discarded, finished ones stay (resumable). The
   * extraction then fails with an ArchiveError whose cause is the signal's reason.
   */
  signal?: AbortSignal | undefined;
}

/** What {@link extractZip} did. */
export interface ExtractResult {
  /** The extraction folder, resolved. */
  outDir: string;
  /** Files written by this run. */
  files: number;
  /** Bytes written by this run. */
  bytes: number;
  /** Junk entries skipped (among those selected by `include`). */
  skippedJunk: number;
  /** Their names. */
  junk: string[];
  /** Entries not selected by `include` (e.g. v3's OCT half), folders included. */
  excluded: number;
  /** Files found already extracted (same size and CRC-32) and left as they were. */
  alreadyPresent: number;
  /** Relative paths (archive names) of every file written or verified, in archive order. */
  entries: string[];
}

/** One entry of {@link listZip}. */
export interface ZipListing {
  name: string;
  compressedSize: number;
  uncompressedSize: number;
  crc32: number;
  isDirectory: boolean;
}

/**
 * The yauzl options extractZip and listZip open archives with, and expect of a ZipFile passed in: entries read on
 * demand, names left undecoded (so this module validates every name itself, backslashes included), sizes checked
 * here rather than by yauzl, and no automatic close (entries are scanned first, then extracted).
 *
 * @example yauzl.fromRandomAccessReader(reader, size, ZIP_OPEN_OPTIONS, (err, zipfile) => ...)
 */
export const ZIP_OPEN_OPTIONS: Readonly<YauzlOptions> = Object.freeze({
  lazyEntries: true,
  autoClose: false,
  decodeStrings: false,
  validateEntrySizes: false,
  strictFileNames: true,
});

/** Entries below this size are never refused for their compression ratio (small files compress unpredictably). */
const RATIO_MIN_BYTES = 1024 * 1024;

/** Write buffer of each `.part` file. */
const WRITE_BYTES = 1024 * 1024;

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

/** yauzl 3 exports that @types/yauzl (2.x) does not describe. */
interface Yauzl3 {
  getFileNameLowLevel(flags: number, fileName: Buffer, extraFields: Array<{ id: number; data: Buffer }>, strict: boolean): string;
}

/**
 * True for entries that carry no data of the dataset: anything under a `__MACOSX/` folder, AppleDouble `._*` files,
 * `.DS_Store` and `Thumbs.db`, in any folder.
 *
 * @example isJunkEntry('__MACOSX/chest_xray/train/._x.jpeg') // true
 */
export function isJunkEntry(name: string): boolean {
  const segments = name.split(/[\\/]/).filter((s) => s !== '');
  if (segments.includes('__MACOSX')) return true;
  const base = segments.at(-1) ?? '';
  return base.startsWith('._') || base === '.DS_Store' || base.toLowerCase() === 'thumbs.db';
}

/**
 * Selects the chest X-ray half of the dataset archives: entries under a `chest_xray/` folder (v2 `chest_xray/...`,
 * v3 `CellData/chest_xray/...`). Folder names are case-sensitive, as in the archives; v3's `CellData/OCT/` is not
 * selected.
 *
 * @example await extractZip({ archive: 'data/downloads/ZhangLabData.zip', outDir: 'data/extracted', include: chestEntryFilter })
 */
export function chestEntryFilter(name: string): boolean {
  const segments = name.split('/');
  const at = segments.indexOf('chest_xray');
  return at >= 0 && segments.slice(at + 1).some((s) => s !== '');
}

/**
 * The absolute path an entry is written to under `outDir`, or an ArchiveError when the name is absolute (`/x`,
 * `C:\x`, `\\server\x`), has a `..` segment (with `/` or `\`), holds another backslash or a NUL, or is empty.
 * With `backslashSeparates` (an entry made on Windows: MS-DOS, NTFS or VFAT host) a backslash separates folders as `/` does.
 *
 * @example safeEntryPath('data/extracted', 'chest_xray/train/NORMAL/a.jpeg', 'ChestXRay2017.zip')
 */
export function safeEntryPath(outDir: string, entryName: string, archive: string, options: { backslashSeparates?: boolean } = {}): string {
  const where = `Archive ${quote(archive)} entry ${quote(entryName)}`;
  if (/^[\\/]/.test(entryName) || /^[A-Za-z]:/.test(entryName)) {
    throw new ArchiveError(`${where} is an absolute path; expected a path relative to the extraction folder`, { path: archive, entry: entryName });
  }
  const segments = entryName.split(/[\\/]/);
  if (segments.includes('..')) {
    throw new ArchiveError(`${where} escapes the extraction folder with a ".." segment; expected a path inside it`, { path: archive, entry: entryName });
  }
  // Windows drops the trailing dots and spaces of a name: ".. " or "..." would be ".." there, "  " nothing at all.
  const odd = segments.find((s) => /^[. ]+$/.test(s) && s !== '.');
  if (odd !== undefined) {
    throw new ArchiveError(`${where} has a segment ${quote(odd)} of dots and spaces only, which Windows reads as ".." or as nothing; expected a path inside the extraction folder`, { path: archive, entry: entryName });
  }
  if (!options.backslashSeparates && entryName.includes('\\')) {
    throw new ArchiveError(`${where} contains a backslash; expected "/" as the only path separator`, { path: archive, entry: entryName });
  }
  const parts = segments.filter((s) => s !== '' && s !== '.');
  if (parts.length === 0 || entryName.includes('\0')) {
    throw new ArchiveError(`${where} has an empty or invalid name; expected a path relative to the extraction folder`, { path: archive, entry: entryName });
  }
  const root = resolve(outDir);
  const target = resolve(root, ...parts);
  const rel = relative(root, target);
  if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
    throw new ArchiveError(`${where} escapes the extraction folder; expected a path inside it`, { path: archive, entry: entryName });
  }
  return target;
}

/**
 * The ArchiveError for an archive yauzl could not open: not a zip at all, or one that starts like a zip but lost its
 * end (an interrupted download). `head` is the archive's first bytes when known.
 *
 * @example throw zipOpenError('ZhangLabData.zip', err, firstBytes)
 */
export function zipOpenError(archive: string, cause: unknown, head?: Uint8Array): PneumotypeError {
  if (cause instanceof PneumotypeError) return cause;
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT') {
    return new ArchiveError(`Archive ${quote(archive)} does not exist; expected a zip file at that path`, { path: archive, cause });
  }
  const message = cause instanceof Error ? cause.message : String(cause);
  if (/end of central directory record signature not found/i.test(message)) {
    const looksLikeZip = head !== undefined && head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 3 && head[3] === 4;
    return looksLikeZip
      ? new ArchiveError(`Archive ${quote(archive)} is truncated: it starts like a zip file but has no end of central directory record; expected a complete archive`, { path: archive, cause })
      : new ArchiveError(`Archive ${quote(archive)} is not a zip file (no end of central directory record); expected a .zip archive`, { path: archive, cause });
  }
  return new ArchiveError(`Archive ${quote(archive)} cannot be opened as a zip file; expected a valid .zip archive`, { path: archive, cause });
}

/**
 * Lists every entry of an archive (junk and unsafe names included: listing writes nothing) from its central directory.
 *
 * @example const entries = await listZip('data/downloads/ChestXRay2017.zip');
 */
export async function listZip(archive: ArchiveSource): Promise<ZipListing[]> {
  const { zipfile, name } = await openArchive(archive);
  try {
    const out: ZipListing[] = [];
    for await (const entry of readEntries(zipfile, name)) {
      const entryName = entryPathOf(entry, entryNameOf(entry));
      out.push({
        name: entryName,
        compressedSize: entry.compressedSize,
        uncompressedSize: entry.uncompressedSize,
        crc32: entry.crc32,
        isDirectory: isDirectoryEntry(entry, entryName),
      });
    }
    return out;
  } finally {
    zipfile.close();
  }
}

/** A selected file entry, validated, waiting to be extracted. */
interface PlannedFile {
  readonly entry: Entry;
  readonly name: string;
  readonly target: string;
}

/**
 * Extracts an archive safely. The whole central directory is validated first (entry count; the name of every entry,
 * selected or not; then links and special files, encryption, compression method, declared sizes and ratios and the
 * total size of the selected entries); a refused archive writes nothing.
 * Then the selected entries are streamed, one at a time in archive order, to `NAME.part` and renamed when complete,
 * counting actual bytes and checking each CRC-32. Files already present with the same size and CRC-32 are kept, so
 * an interrupted extraction resumes. Data errors found while streaming (CRC, corrupt deflate data, sizes that lie)
 * discard the entry being written and throw; files finished before it stay. The archive itself is never modified.
 * While it works it holds `OUT.lock` beside the output folder: a second extraction into it gets a BusyError.
 *
 * @example
 * const r = await extractZip({ archive: 'data/downloads/ChestXRay2017.zip', outDir: 'data/extracted', include: chestEntryFilter });
 */
export async function extractZip(options: ExtractOptions): Promise<ExtractResult> {
  const outDir = resolve(options.outDir ?? DEFAULTS.extractedDir);
  return withLock(`${outDir}.lock`, `extracting into ${quote(outDir)}`, () => extractUnlocked(options));
}

async function extractUnlocked(options: ExtractOptions): Promise<ExtractResult> {
  const outDir = resolve(options.outDir ?? DEFAULTS.extractedDir);
  const include = options.include ?? (() => true);
  const maxEntries = options.maxEntries ?? DEFAULTS.maxArchiveEntries;
  const maxTotalBytes = options.maxTotalBytes ?? DEFAULTS.maxExtractBytes;
  const maxEntryBytes = options.maxEntryBytes ?? DEFAULTS.maxEntryBytes;
  const maxRatio = options.maxCompressionRatio ?? DEFAULTS.maxCompressionRatio;
  const signal = options.signal;
  // Stopped by the signal: the step's own error, saying how to go on (as a download's FetchError does).
  const stops = new WeakSet<Error>();
  const stopped = (name: string): ArchiveError => {
    const err = new ArchiveError(`Extraction of ${quote(name)} into ${quote(outDir)} was aborted: run it again to continue (the files finished so far are kept)`, {
      path: name,
      cause: signal?.reason,
    });
    stops.add(err);
    return err;
  };
  if (signal?.aborted) throw stopped(typeof options.archive === 'string' ? options.archive : options.archive.name);

  const { zipfile, name: archive } = await openArchive(options.archive);
  try {
    // --- plan: validate the whole central directory before writing anything
    if (zipfile.entryCount > maxEntries) {
      throw new ArchiveError(`Archive ${quote(archive)} has ${zipfile.entryCount} entries, more than the limit of ${maxEntries} (maxEntries); refusing a possible zip bomb`, { path: archive });
    }
    const planned: PlannedFile[] = [];
    const junk: string[] = [];
    const seen = new Map<string, { target: string; name: string }>();
    let excluded = 0;
    let totalBytes = 0;
    for await (const entry of readEntries(zipfile, archive, outDir)) {
      if (signal?.aborted) throw stopped(archive);
      const raw = entryNameOf(entry);
      // From here on the name with "/" separators (as `include` sees it); safeEntryPath's refusals quote it as stored.
      const name = entryPathOf(entry, raw);
      // bsdtar and macOS `tar -a` write the archive's own root as "./": nothing to create.
      if (/^(?:\.\/+)*\.\/*$/.test(name) && isDirectoryEntry(entry, name) && entry.uncompressedSize === 0) continue;
      const target = safeEntryPath(outDir, raw, archive, { backslashSeparates: isMadeOnWindows(entry) });
      if (!include(name)) {
        excluded++;
        continue;
      }
      if (isJunkEntry(name)) {
        junk.push(name);
        continue;
      }
      const where = `Archive ${quote(archive)} entry ${quote(name)}`;
      const details = { path: archive, entry: name };
      const mode = (entry.externalFileAttributes >>> 16) & S_IFMT;
      if (mode === S_IFLNK) throw new ArchiveError(`${where} is a symbolic link; expected a regular file or folder (links are never extracted)`, details);
      if (mode !== 0 && mode !== S_IFREG && mode !== S_IFDIR) {
        throw new ArchiveError(`${where} is a special file (mode 0o${mode.toString(8)}); expected a regular file or folder`, details);
      }
      if (isDirectoryEntry(entry, name)) {
        // Its data would be dropped unnoticed: there is no file to write it to.
        if (entry.uncompressedSize > 0) {
          throw new ArchiveError(`${where} is a folder (a name ending in "/" or a folder mode) that holds ${entry.uncompressedSize} bytes; expected a folder without data, or a file`, details);
        }
        continue;
      }
      if (entry.isEncrypted()) throw new ArchiveError(`${where} is encrypted; expected an unencrypted archive`, details);
      if (entry.compressionMethod !== 0 && entry.compressionMethod !== 8) {
        throw new ArchiveError(`${where} uses compression method ${entry.compressionMethod}; expected 0 (stored) or 8 (deflated)`, details);
      }
      if (entry.uncompressedSize > maxEntryBytes) {
        throw new ArchiveError(`${where} declares ${entry.uncompressedSize} bytes, more than the limit of ${maxEntryBytes} (maxEntryBytes); refusing a possible zip bomb`, details);
      }
      if (entry.uncompressedSize > RATIO_MIN_BYTES) {
        const ratio = entry.uncompressedSize / Math.max(1, entry.compressedSize);
        if (ratio > maxRatio) {
          throw new ArchiveError(`${where} expands ${entry.compressedSize} bytes to ${entry.uncompressedSize} (ratio ${Math.round(ratio)}:1), more than the limit of ${maxRatio}:1 (maxCompressionRatio); refusing a possible zip bomb`, details);
        }
      }
      totalBytes += entry.uncompressedSize;
      if (totalBytes > maxTotalBytes) {
        throw new ArchiveError(`${where} brings the declared size of the selected entries to ${totalBytes} bytes, more than the limit of ${maxTotalBytes} (maxTotalBytes); refusing a possible zip bomb`, details);
      }
      // Names equal but for case or Unicode normalisation are one file on macOS and Windows: one would overwrite the
      // other, and every run would find it changed and extract it again.
      const folded = foldName(target);
      const twin = seen.get(folded);
      if (twin?.target === target) throw new ArchiveError(`${where} appears more than once; expected unique entry names`, details);
      if (twin !== undefined) {
        throw new ArchiveError(
          `${where} and entry ${quote(twin.name)} differ only in letter case or Unicode normalisation; expected entry names that stay distinct on every filesystem`,
          details,
        );
      }
      seen.set(folded, { target, name });
      planned.push({ entry, name, target });
    }

    // Entries whose data overlap (several names over one deflated stream) multiply what a small archive extracts past
    // the per-entry ratio check. A local header takes at least 30 bytes before its data: a lower bound of where the
    // next entry may start.
    const byOffset = [...planned].sort((a, b) => a.entry.relativeOffsetOfLocalHeader - b.entry.relativeOffsetOfLocalHeader);
    for (let k = 1; k < byOffset.length; k++) {
      const before = byOffset[k - 1] as PlannedFile;
      const after = byOffset[k] as PlannedFile;
      const end = before.entry.relativeOffsetOfLocalHeader + 30 + before.entry.compressedSize;
      if (after.entry.relativeOffsetOfLocalHeader < end) {
        throw new ArchiveError(
          `Archive ${quote(archive)} entry ${quote(after.name)} starts at byte ${after.entry.relativeOffsetOfLocalHeader}, inside entry ${quote(before.name)} ` +
            `(bytes ${before.entry.relativeOffsetOfLocalHeader} to at least ${end}); refusing overlapping entries, a possible zip bomb`,
          { path: archive, entry: after.name },
        );
      }
    }

    // Two entries must not write one path: a file where another entry needs a folder, or a file named like another's
    // temporary `.part` (it would be overwritten by it, silently, on every run).
    const byTarget = new Map(planned.map((f) => [f.target, f.name]));
    for (const file of planned) {
      const clash = byTarget.get(`${file.target}.part`);
      if (clash !== undefined) {
        throw new ArchiveError(
          `Archive ${quote(archive)} entry ${quote(clash)} has the name of entry ${quote(file.name)}'s temporary file (its name plus ".part"); expected entries that cannot overwrite each other`,
          { path: archive, entry: clash },
        );
      }
      for (let dir = dirname(file.target); dir.length > outDir.length; dir = dirname(dir)) {
        const holder = byTarget.get(dir);
        if (holder !== undefined) {
          throw new ArchiveError(
            `Archive ${quote(archive)} entry ${quote(file.name)} lies in ${quote(holder)}, which the archive also holds as a file; expected a folder there`,
            { path: archive, entry: file.name },
          );
        }
      }
    }

    // --- extract: stream each selected entry, verify, rename
    const tracker = new ProgressTracker({
      stage: 'extract',
      unit: 'bytes',
      total: totalBytes,
      onProgress: options.onProgress,
      intervalMs: options.progressIntervalMs ?? DEFAULTS.progressIntervalMs,
    });
    const result: ExtractResult = { outDir, files: 0, bytes: 0, skippedJunk: junk.length, junk, excluded, alreadyPresent: 0, entries: [] };
    for (const file of planned) {
      if (signal?.aborted) throw stopped(archive);
      if (await isAlreadyExtracted(file)) {
        result.alreadyPresent++;
        result.entries.push(file.name);
        tracker.skip(file.entry.uncompressedSize);
        continue;
      }
      await extractEntry(zipfile, archive, file, { maxEntryBytes, tracker, signal, stopped: () => stopped(archive) });
      result.files++;
      result.bytes += file.entry.uncompressedSize;
      result.entries.push(file.name);
    }
    tracker.finish();
    return result;
  } catch (err) {
    // A stop while the central directory or an entry was read over HTTP surfaces as the reader's own error (a
    // FetchError "aborted"): said as the stop it is, with how to go on.
    if (signal?.aborted && !(err instanceof Error && stops.has(err))) throw stopped(archive);
    throw err;
  } finally {
    zipfile.close();
  }
}

/** Opens a path with ZIP_OPEN_OPTIONS, or checks and adopts a ZipFile opened elsewhere. */
async function openArchive(archive: ArchiveSource): Promise<{ zipfile: ZipFile; name: string }> {
  if (typeof archive !== 'string') {
    const { zipfile, name } = archive;
    if (!zipfile.lazyEntries) {
      throw new ConfigError(`ZipFile of archive ${quote(name)} was opened without lazyEntries: true; expected it opened with ZIP_OPEN_OPTIONS`, { path: name });
    }
    if (zipfile.entriesRead > 0 || !zipfile.isOpen) {
      throw new ConfigError(`ZipFile of archive ${quote(name)} has already been read or closed; expected a freshly opened ZipFile`, { path: name });
    }
    zipfile.autoClose = false; // entries are scanned, then extracted: the file must stay open in between
    return { zipfile, name };
  }
  try {
    const zipfile = await new Promise<ZipFile>((done, fail) => {
      yauzl.open(archive, { ...ZIP_OPEN_OPTIONS }, (err, zf) => (err ? fail(err) : done(zf)));
    });
    return { zipfile, name: archive };
  } catch (err) {
    throw zipOpenError(archive, err, await readHead(archive));
  }
}

/** The first 4 bytes of a file, or undefined when it cannot be read. */
async function readHead(path: string): Promise<Uint8Array | undefined> {
  try {
    const handle = await open(path, 'r');
    try {
      const buf = Buffer.alloc(4);
      const { bytesRead } = await handle.read(buf, 0, 4, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  } catch {
    return undefined;
  }
}

/**
 * The entries of a lazily read ZipFile, one at a time. Central-directory errors become ArchiveErrors; a name yauzl
 * refused (when the ZipFile decodes names itself) is reported as {@link safeEntryPath} would.
 */
async function* readEntries(zipfile: ZipFile, archive: string, outDir = '.'): AsyncGenerator<Entry> {
  let index = 0;
  while (true) {
    const entry = await new Promise<Entry | undefined>((done, fail) => {
      const onEntry = (e: Entry): void => {
        cleanup();
        done(e);
      };
      const onEnd = (): void => {
        cleanup();
        done(undefined);
      };
      const onError = (err: Error): void => {
        cleanup();
        fail(centralDirectoryError(err, archive, outDir, index, zipfile.entryCount));
      };
      const cleanup = (): void => {
        zipfile.off('entry', onEntry);
        zipfile.off('end', onEnd);
        zipfile.off('error', onError);
      };
      zipfile.on('entry', onEntry);
      zipfile.on('end', onEnd);
      zipfile.on('error', onError);
      zipfile.readEntry();
    });
    if (entry === undefined) return;
    index++;
    yield entry;
  }
}

function centralDirectoryError(err: Error, archive: string, outDir: string, index: number, count: number): PneumotypeError {
  if (err instanceof PneumotypeError) return err;
  const refused = /^(?:invalid characters in fileName|absolute path|invalid relative path): (.*)$/s.exec(err.message);
  if (refused?.[1] !== undefined) {
    try {
      safeEntryPath(outDir, refused[1], archive);
    } catch (e) {
      if (e instanceof ArchiveError) return e;
    }
  }
  return new ArchiveError(`Archive ${quote(archive)} has a corrupt central directory at entry ${index + 1} of ${count}; expected a complete, valid zip file`, { path: archive, cause: err });
}

/** The entry's name as a string, decoding it (UTF-8 flag, Info-ZIP Unicode path, CP437) when yauzl left it raw. */
function entryNameOf(entry: Entry): string {
  const raw: unknown = entry.fileName;
  if (typeof raw === 'string') return raw;
  const decode = (yauzl as unknown as Yauzl3).getFileNameLowLevel;
  return decode(entry.generalPurposeBitFlag, raw as Buffer, entry.extraFields, true);
}

/** Hosts of the "version made by" field whose zips separate folders with "\\": MS-DOS/FAT (0), NTFS (11), VFAT (14). */
const WINDOWS_HOSTS: ReadonlySet<number> = new Set([0, 11, 14]);

/**
 * True for an entry made on Windows (MS-DOS, NTFS or VFAT in the high byte of "version made by"), whose name may use
 * "\\" as the path separator, as Windows PowerShell 5.1 `Compress-Archive` writes it; Info-ZIP's unzip reads those
 * names the same way. On other hosts a backslash is a legal file-name character and stays refused.
 */
function isMadeOnWindows(entry: Pick<Entry, 'versionMadeBy'>): boolean {
  return WINDOWS_HOSTS.has(entry.versionMadeBy >>> 8);
}

/** An entry's name with "/" as the only separator: the backslashes of an entry made on Windows become "/". */
function entryPathOf(entry: Entry, name: string): string {
  return isMadeOnWindows(entry) ? name.replaceAll('\\', '/') : name;
}

/** A path as case-insensitive, normalisation-insensitive filesystems (APFS, NTFS) compare it. */
function foldName(path: string): string {
  return path.normalize('NFC').toLowerCase();
}

function isDirectoryEntry(entry: Entry, name: string): boolean {
  return name.endsWith('/') || ((entry.externalFileAttributes >>> 16) & S_IFMT) === S_IFDIR;
}

/** True when the target exists with the entry's size and CRC-32. */
async function isAlreadyExtracted(file: PlannedFile): Promise<boolean> {
  let size: number;
  try {
    const s = await stat(file.target);
    if (!s.isFile()) return false;
    size = s.size;
  } catch {
    return false;
  }
  if (size !== file.entry.uncompressedSize) return false;
  let crc = 0;
  for await (const chunk of createReadStream(file.target, { highWaterMark: 1 << 20 })) crc = crc32(chunk as Buffer, crc);
  return crc === file.entry.crc32;
}

function openReadStream(zipfile: ZipFile, entry: Entry): Promise<Readable> {
  return new Promise((done, fail) => zipfile.openReadStream(entry, (err, stream) => (err ? fail(err) : done(stream))));
}

/** Streams one entry to TARGET.part, counting bytes and computing its CRC-32, then renames it into place. */
async function extractEntry(
  zipfile: ZipFile,
  archive: string,
  file: PlannedFile,
  context: { maxEntryBytes: number; tracker: ProgressTracker; signal: AbortSignal | undefined; stopped: () => PneumotypeError },
): Promise<void> {
  const { entry, name, target } = file;
  const where = `Archive ${quote(archive)} entry ${quote(name)}`;
  const details = { path: archive, entry: name };
  const declared = entry.uncompressedSize;
  const part = `${target}.part`;
  const unreadable = (cause: unknown): PneumotypeError => {
    if (cause instanceof PneumotypeError) return cause;
    return new ArchiveError(`${where} cannot be read: its data is corrupt or the archive is truncated`, { ...details, cause });
  };

  let stream: Readable | undefined;
  let sink: WriteStream | undefined;
  let actual = 0;
  let crc = 0;
  try {
    await mkdir(dirname(target), { recursive: true });
    try {
      stream = await openReadStream(zipfile, entry);
    } catch (err) {
      throw unreadable(err);
    }
    // pipeline sees every error; this listener keeps one raised before or after it from crashing the process.
    stream.on('error', ignore);
    const check = new Transform({
      transform(chunk: Buffer, _encoding, done): void {
        actual += chunk.length;
        if (actual > context.maxEntryBytes) {
          done(new ArchiveError(`${where} inflates to more than ${context.maxEntryBytes} bytes (maxEntryBytes); refusing a possible zip bomb`, details));
        } else if (actual > declared) {
          done(new ArchiveError(`${where} inflates to more than its declared ${declared} bytes; the archive is corrupt or a zip bomb`, details));
        } else {
          crc = crc32(chunk, crc);
          context.tracker.add(chunk.length);
          done(null, chunk);
        }
      },
    });
    sink = createWriteStream(part, { highWaterMark: WRITE_BYTES });
    let writeFailure: unknown;
    sink.on('error', (err) => {
      writeFailure ??= err;
    });
    try {
      await pipeline(stream, check, sink, context.signal ? { signal: context.signal } : {});
    } catch (err) {
      if (context.signal?.aborted) throw context.stopped();
      if (err instanceof PneumotypeError) throw err;
      if (writeFailure !== undefined) throw writeFailure;
      throw unreadable(err);
    }
    if (actual !== declared) {
      throw new ArchiveError(`${where} holds ${actual} bytes, fewer than its declared ${declared}; the archive is corrupt or truncated`, details);
    }
    if (crc !== entry.crc32) {
      throw new ArchiveError(`${where} fails its CRC-32 check (expected ${hex(entry.crc32)}, got ${hex(crc)}); the archive is corrupt`, details);
    }
    await rename(part, target);
  } catch (err) {
    stream?.destroy();
    // pipeline can reject before the sink has opened its file; removing .part before then would leave one behind.
    if (sink !== undefined) await closed(sink);
    // Best effort: where the folder itself cannot be made (a file in its place), there is no .part to remove.
    await rm(part, { force: true }).catch(ignore);
    if (context.signal?.aborted) throw context.stopped();
    if (err instanceof PneumotypeError) throw err;
    throw new ArchiveError(`${where} cannot be written to ${quote(target)} (${messageOf(err)})`, { ...details, cause: err });
  }
}

function ignore(): void {}

/** Destroys a write stream and resolves once its file descriptor is closed (at once if it already is). */
async function closed(sink: WriteStream): Promise<void> {
  if (sink.closed) return;
  const done = new Promise<void>((resolve) => sink.once('close', resolve));
  sink.destroy();
  await done;
}

function hex(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}
