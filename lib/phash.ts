// Perceptual hashes and the leakage audit: byte-identical and near-duplicate images across splits.
import sharp from 'sharp';
import { DEFAULTS } from './config.js';
import { runSharp } from './images.js';

/** Bits in a hash: a 16x16 difference hash (dHash), robust to re-encoding, resizing and small intensity changes. */
export const HASH_BITS = 256;
const W = 17;
const H = 16;

/**
 * Difference hash of an image: EXIF orientation applied, grayscale, squashed to 17x16, one bit per horizontal neighbour pair (left brighter).
 * Returned as 64 hex characters.
 *
 * @example await dhash('data/labeled/train/normal/IM-0115-0001.jpeg') // 'f0e1...'
 */
export async function dhash(input: string | Buffer, options: { maxInputPixels?: number; name?: string } = {}): Promise<string> {
  const name = options.name ?? (typeof input === 'string' ? input : '<buffer>');
  const px = await runSharp(
    () =>
      // Oriented as decodeGray orients it, so that an EXIF-rotated copy hashes like the same image saved upright.
      sharp(input, { limitInputPixels: options.maxInputPixels ?? DEFAULTS.maxInputPixels, failOn: 'truncated', autoOrient: true })
        .grayscale()
        .resize(W, H, { fit: 'fill', kernel: 'lanczos3' })
        .raw()
        .toBuffer(),
    name,
  );
  const bytes = new Uint8Array(HASH_BITS / 8);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W - 1; x++) {
      const bit = y * (W - 1) + x;
      if ((px[y * W + x] ?? 0) > (px[y * W + x + 1] ?? 0)) bytes[bit >> 3]! |= 1 << (bit & 7);
    }
  }
  return Buffer.from(bytes).toString('hex');
}

function popcount32(v: number): number {
  v -= (v >>> 1) & 0x55555555;
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 0xff;
}

function toWords(hex: string): Uint32Array {
  const words = new Uint32Array(HASH_BITS / 32);
  for (let i = 0; i < words.length; i++) words[i] = Number.parseInt(hex.slice(i * 8, i * 8 + 8), 16) >>> 0;
  return words;
}

/** Number of differing bits between two hashes of {@link dhash}. */
export function hammingDistance(a: string, b: string): number {
  const wa = toWords(a);
  const wb = toWords(b);
  let d = 0;
  for (let i = 0; i < wa.length; i++) d += popcount32(((wa[i] ?? 0) ^ (wb[i] ?? 0)) >>> 0);
  return d;
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

/**
 * Compares every image of one split with every image of the others: identical bytes (SHA-256) and near duplicates
 * (dHash Hamming distance at most `threshold`). Pure: hashes are computed beforehand.
 *
 * @example auditLeakage({ items, threshold: 10 }).clean
 */
export function auditLeakage(options: { items: readonly AuditItem[]; threshold?: number }): LeakageAudit {
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
          let d = 0;
          for (let k = 0; k < l.words.length && d <= threshold; k++) d += popcount32(((l.words[k] ?? 0) ^ (r.words[k] ?? 0)) >>> 0);
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
