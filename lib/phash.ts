// Perceptual hashes and the leakage audit (byte-identical and near-duplicate images across splits), and the thumbnails
// by which a model's training images are known again.
import sharp from 'sharp';
import { DEFAULTS } from './config.js';
import { ImageError } from './errors.js';
import { runSharp } from './images.js';

/** Bits in a hash: a 16x16 difference hash (dHash), robust to re-encoding, resizing and small intensity changes. */
export const HASH_BITS = 256;
const W = 17;
const H = 16;

/** Limits and naming of dhash. */
export interface DhashOptions {
  /** Refuse larger images (sharp's limitInputPixels). Default: DEFAULTS.maxInputPixels (40 Mpx). */
  readonly maxInputPixels?: number;
  /** The image's name in messages. Default: its path, or "<buffer>". */
  readonly name?: string;
}

/**
 * Difference hash of an image: EXIF orientation applied, grayscale, squashed to 17x16, one bit per horizontal neighbour pair (left brighter).
 * Returned as 64 hex characters.
 *
 * @example await dhash('data/labeled/train/normal/IM-0115-0001.jpeg') // 'f0e1...'
 */
export async function dhash(input: string | Buffer, options: DhashOptions = {}): Promise<string> {
  const name = options.name ?? (typeof input === 'string' ? input : '<buffer>');
  const px = await runSharp(
    () =>
      // Oriented as decodeGray orients it, so that an EXIF-rotated copy hashes like the same image saved upright.
      sharp(input, { limitInputPixels: options.maxInputPixels ?? DEFAULTS.maxInputPixels, failOn: 'truncated', autoOrient: true, ignoreIcc: true })
        .grayscale()
        .resize(W, H, { fit: 'fill', kernel: 'lanczos3' })
        .raw()
        .toBuffer(),
    name,
  );
  return Buffer.from(differenceBits(px)).toString('hex');
}

/** dHash's bits of a 17 x 16 grayscale image: one per horizontal neighbour pair, set where the left one is brighter. */
function differenceBits(px: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(HASH_BITS / 8);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W - 1; x++) {
      const bit = y * (W - 1) + x;
      if ((px[y * W + x] ?? 0) > (px[y * W + x + 1] ?? 0)) bytes[bit >> 3]! |= 1 << (bit & 7);
    }
  }
  return bytes;
}

function popcount32(v: number): number {
  v -= (v >>> 1) & 0x55555555;
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 0xff;
}

/**
 * Differing bits of two hashes as 32-bit words, counted until more than `limit` (then any number above it): what the
 * audit and {@link seenInTraining} compare, stopping early on pairs far apart.
 */
function wordsDistance(a: Uint32Array, b: Uint32Array, limit = Infinity): number {
  let d = 0;
  for (let k = 0; k < a.length && d <= limit; k++) d += popcount32(((a[k] ?? 0) ^ (b[k] ?? 0)) >>> 0);
  return d;
}

function toWords(hex: string): Uint32Array {
  const words = new Uint32Array(HASH_BITS / 32);
  for (let i = 0; i < words.length; i++) words[i] = Number.parseInt(hex.slice(i * 8, i * 8 + 8), 16) >>> 0;
  return words;
}

/** Number of differing bits between two hashes of {@link dhash}. */
export function hammingDistance(a: string, b: string): number {
  return wordsDistance(toWords(a), toWords(b));
}

/** What the audit needs of an image. */
export interface AuditItem {
  readonly file: string;
  readonly split: string;
  readonly patientId: string;
  readonly sha256: string;
  /** dHash hex, absent for undecodable images. */
  readonly hash?: string | undefined;
}

export interface LeakageAudit {
  /** Near-duplicate threshold in bits (of 256). */
  readonly threshold: number;
  /** Byte-identical files in different splits. */
  readonly identicalAcrossSplits: readonly { readonly a: string; readonly b: string; readonly sha256: string }[];
  /** Perceptually near-identical files in different splits (distance <= threshold, not byte-identical). */
  readonly nearDuplicatesAcrossSplits: readonly { readonly a: string; readonly b: string; readonly distance: number }[];
  /** Byte-identical files within one split but under different patient ids (informative: grouping cannot see them). */
  readonly identicalAcrossPatients: readonly { readonly a: string; readonly b: string; readonly sha256: string }[];
  /** True when nothing is shared across splits. */
  readonly clean: boolean;
}

/** The input of auditLeakage. */
export interface AuditLeakageOptions {
  readonly items: readonly AuditItem[];
  /** The largest dHash Hamming distance that counts as a near duplicate. Default: 10. */
  readonly threshold?: number;
}

/**
 * Compares every image of one split with every image of the others: identical bytes (SHA-256) and near duplicates
 * (dHash Hamming distance at most `threshold`). Pure: hashes are computed beforehand.
 *
 * @example auditLeakage({ items, threshold: 10 }).clean
 */
export function auditLeakage(options: AuditLeakageOptions): LeakageAudit {
  const threshold = options.threshold ?? 10;
  const identicalAcrossSplits: { a: string; b: string; sha256: string }[] = [];
  const identicalAcrossPatients: { a: string; b: string; sha256: string }[] = [];
  const bySha = new Map<string, AuditItem[]>();
  for (const item of options.items) {
    const list = bySha.get(item.sha256) ?? [];
    list.push(item);
    bySha.set(item.sha256, list);
  }
  for (const [sha, list] of bySha) {
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length; j++) {
        const a = list[i] as AuditItem;
        const b = list[j] as AuditItem;
        if (a.split !== b.split) identicalAcrossSplits.push({ a: a.file, b: b.file, sha256: sha });
        else if (a.patientId !== b.patientId) identicalAcrossPatients.push({ a: a.file, b: b.file, sha256: sha });
      }
    }
  }
  const splits = [...new Set(options.items.map((i) => i.split))].sort();
  const nearDuplicatesAcrossSplits: { a: string; b: string; distance: number }[] = [];
  const hashed = options.items.filter((i) => i.hash !== undefined).map((i) => ({ item: i, words: toWords(i.hash as string) }));
  for (let s = 0; s < splits.length; s++) {
    for (let t = s + 1; t < splits.length; t++) {
      const left = hashed.filter((h) => h.item.split === splits[s]);
      const right = hashed.filter((h) => h.item.split === splits[t]);
      for (const l of left) {
        for (const r of right) {
          const d = wordsDistance(l.words, r.words, threshold);
          if (d <= threshold && l.item.sha256 !== r.item.sha256) nearDuplicatesAcrossSplits.push({ a: l.item.file, b: r.item.file, distance: d });
        }
      }
    }
  }
  return {
    threshold,
    identicalAcrossSplits,
    nearDuplicatesAcrossSplits,
    identicalAcrossPatients,
    clean: identicalAcrossSplits.length === 0 && nearDuplicatesAcrossSplits.length === 0,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Images a model has seen: thumbnails of its training images, kept with the model

/** The file in a model folder with the thumbnails of its training images: 17 x 16 uint8 each (dHash's), one after another. */
export const TRAINING_THUMBNAILS_FILE = 'training-thumbnails.u8';
/** Bytes of one thumbnail. */
export const THUMBNAIL_BYTES = W * H;
/**
 * When a thumbnail is taken for another copy of a training image: its Pearson correlation with the training image's
 * thumbnail is at least `correlation` and their difference hashes differ in at most `bits` of 256. Two measures, so
 * that images alike in one way only (same anatomy, the same synthetic pattern) are not taken for copies. On the shared
 * train split at 128 px: the 92 training images among the full-resolution originals, against their 224 px copies,
 * give at least 0.9993 and at most 7 bits (0.9959 while the NORMAL originals were decoded through their ICC profile);
 * each validation image's most correlated training image (other patients, or the same child's other X-ray) at most
 * 0.980, and its closest hash is 15 bits away or more. (The test fixtures' synthetic images of one class, noise on one
 * pattern, correlate at 0.988-0.994 and differ in 20-40 bits.)
 */
export const SAME_IMAGE = { correlation: 0.99, bits: 10 } as const;

/**
 * The thumbnail of a decoded grayscale image (`size` x `size` uint8, as the cache and evaluate decode it): 17 x 16,
 * squashed with Lanczos as the images themselves are, the input of {@link dhash}'s bits.
 *
 * @example await thumbnail(cache.readImage(0), 128) // Uint8Array(272)
 */
export async function thumbnail(pixels: Uint8Array, size: number): Promise<Uint8Array> {
  const small = await runSharp(
    () =>
      // One channel out as in (sharp writes raw single-channel input back as three channels unless told).
      sharp(Buffer.from(pixels.buffer, pixels.byteOffset, pixels.byteLength), { raw: { width: size, height: size, channels: 1 } })
        .resize(W, H, { fit: 'fill', kernel: 'lanczos3' })
        .grayscale()
        .raw()
        .toBuffer(),
    '<pixels>',
  );
  if (small.length !== THUMBNAIL_BYTES) throw new ImageError(`a thumbnail came out as ${small.length} bytes: expected ${THUMBNAIL_BYTES} (17 x 16, one channel)`);
  return new Uint8Array(small.buffer, small.byteOffset, THUMBNAIL_BYTES);
}

/** What a thumbnail is compared by: a zero-mean unit vector (a dot product is the correlation; undefined when flat) and its dHash words. */
function signature(thumb: Uint8Array): { unit: Float32Array | undefined; words: Uint32Array } {
  const unit = new Float32Array(thumb.length);
  let mean = 0;
  for (let i = 0; i < thumb.length; i++) mean += thumb[i] ?? 0;
  mean /= thumb.length;
  let sumSq = 0;
  for (let i = 0; i < thumb.length; i++) {
    const d = (thumb[i] ?? 0) - mean;
    unit[i] = d;
    sumSq += d * d;
  }
  const norm = Math.sqrt(sumSq);
  for (let i = 0; i < unit.length; i++) unit[i] = (unit[i] ?? 0) / norm;
  // Words in the machine's byte order: compared only with words made alike, so any order counts the same bits.
  return { unit: sumSq > 0 ? unit : undefined, words: new Uint32Array(differenceBits(thumb).buffer) };
}

/**
 * Which of `queries` (thumbnails) are copies of a training image: those that match one of `training` (a
 * TRAINING_THUMBNAILS_FILE's bytes) by both measures of `same` ({@link SAME_IMAGE}). Pure. Returns the indices of
 * `queries`, in order.
 *
 * @example seenInTraining([await thumbnail(px, 128)], await readFile('models/default/training-thumbnails.u8')) // [0] when px is a training image
 */
export function seenInTraining(queries: readonly Uint8Array[], training: Uint8Array, same: { correlation: number; bits: number } = SAME_IMAGE): number[] {
  const known: { unit: Float32Array; words: Uint32Array }[] = [];
  for (let start = 0; start + THUMBNAIL_BYTES <= training.length; start += THUMBNAIL_BYTES) {
    const k = signature(training.subarray(start, start + THUMBNAIL_BYTES));
    if (k.unit) known.push({ unit: k.unit, words: k.words });
  }
  const seen: number[] = [];
  queries.forEach((q, qi) => {
    const { unit, words } = signature(q);
    if (!unit) return;
    for (const k of known) {
      let dot = 0;
      for (let i = 0; i < unit.length; i++) dot += (unit[i] as number) * (k.unit[i] as number);
      if (dot >= same.correlation && wordsDistance(words, k.words, same.bits) <= same.bits) {
        seen.push(qi);
        return;
      }
    }
  });
  return seen;
}
