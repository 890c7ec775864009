// Maintainer tool: a model's validation recall when its images go through copy-pipeline-like changes at 224 px.
// Usage: npx tsx scripts/robustness.ts [MODEL_DIR] [LABELED_DIR] [PREDICTIONS_CSV] [GROUPS_CSV:COLUMN]
// (defaults: models/default, data/labeled, MODEL_DIR/predictions.csv, ../shared/data/chest_xray_train_224.csv:derived_from)
// The images are those of the predictions CSV (evaluate --predictions; models/default ships its validation split's).
// Each change is made to the 224 px image, as a copy pipeline would, then the model decodes it as usual. One line per
// change: accuracy, recall per class, the test estimate (recall weighted by the official test split's class counts:
// 234 normal, 242 bacteria, 148 virus) and accuracy per group; the last line is JSON. docs/experiments.md has figures.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { CLASSES } from '../lib/config.js';
import { parseCsv } from '../lib/csv.js';
import { loadModel, predict } from '../lib/evaluate.js';

const [modelDir = 'models/default', labeledDir = 'data/labeled', predictionsCsv = join(modelDir, 'predictions.csv'), groupsArg = '../shared/data/chest_xray_train_224.csv:derived_from'] = process.argv.slice(2);
const rows = parseCsv(await readFile(predictionsCsv, 'utf8'), predictionsCsv);
const [groupsCsv, column] = [groupsArg.slice(0, groupsArg.lastIndexOf(':')), groupsArg.slice(groupsArg.lastIndexOf(':') + 1)];
const groupOf = new Map(parseCsv(await readFile(groupsCsv, 'utf8'), groupsCsv).map((r) => [r.file, r[column] ?? '?']));
const TEST_COUNTS = { normal: 234, bacteria: 242, virus: 148 } as const;

const gray = (b: Buffer): sharp.Sharp => sharp(b).grayscale();
const jpeg = (s: sharp.Sharp): Promise<Buffer> => s.jpeg({ quality: 92 }).toBuffer();
/** Each pixel through `f` (0-255 to 0-255), on the raw grayscale image. */
async function perPixel(b: Buffer, f: (v: number, mean: number, std: number) => number): Promise<Buffer> {
  const { data, info } = await gray(b).raw().toBuffer({ resolveWithObject: true });
  let mean = 0;
  for (const v of data) mean += v;
  mean /= data.length;
  let variance = 0;
  for (const v of data) variance += (v - mean) ** 2;
  const std = Math.sqrt(variance / data.length) || 1;
  const out = Buffer.from(data.map((v) => Math.max(0, Math.min(255, Math.round(f(v, mean, std))))));
  return jpeg(sharp(out, { raw: { width: info.width, height: info.height, channels: 1 } }));
}
const CHANGES: Record<string, (b: Buffer) => Promise<Buffer>> = {
  'none (the images as they are)': async (b) => b,
  'CLAHE, clip 4, 12 x 12 tiles (the 224-copy pipeline)': (b) => jpeg(gray(b).clahe({ width: 19, height: 19, maxSlope: 4 })),
  'CLAHE, clip 2, 12 x 12 tiles': (b) => jpeg(gray(b).clahe({ width: 19, height: 19, maxSlope: 2 })),
  'intensity to mean 127, sd 50 (the 224-copy pipeline)': (b) => perPixel(b, (v, m, s) => 127 + ((v - m) / s) * 50),
  'JPEG quality 50': (b) => gray(b).jpeg({ quality: 50 }).toBuffer(),
  'Gaussian blur, sigma 1': (b) => jpeg(gray(b).blur(1)),
  'unsharp mask, sigma 1': (b) => jpeg(gray(b).sharpen({ sigma: 1 })),
  'down to 160 px and up again': async (b) => jpeg(gray(await gray(b).resize(160, 160, { fit: 'fill' }).png().toBuffer()).resize(224, 224, { fit: 'fill' })),
  'through 227 px (the 227-copy pipeline)': async (b) => jpeg(gray(await jpeg(gray(b).resize(227, 227, { fit: 'fill' }))).resize(224, 224, { fit: 'fill' })),
  'gamma 0.8 (brighter mid-tones)': (b) => perPixel(b, (v) => 255 * (v / 255) ** 0.8),
  'gamma 1.25 (darker mid-tones)': (b) => perPixel(b, (v) => 255 * (v / 255) ** 1.25),
  'brightness +20 levels': (b) => perPixel(b, (v) => v + 20),
  'contrast x 1.2': (b) => perPixel(b, (v, m) => m + (v - m) * 1.2),
};

const loaded = await loadModel(modelDir);
const results: Record<string, unknown>[] = [];
try {
  const originals = await Promise.all(rows.map((r) => readFile(join(labeledDir, r.file ?? ''))));
  for (const [change, apply] of Object.entries(CHANGES)) {
    const changed = await Promise.all(originals.map((b) => apply(b)));
    const predicted = await predict(loaded, changed.map((data, i) => ({ name: rows[i]?.file ?? '', data })));
    const right = { normal: [0, 0], bacteria: [0, 0], virus: [0, 0] } as Record<string, [number, number]>;
    const groups: Record<string, [number, number]> = {};
    predicted.forEach((p, i) => {
      const row = rows[i];
      const truth = row?.trueLabel ?? '';
      const ok = 'label' in p && p.label === truth ? 1 : 0;
      const cell = right[truth];
      if (cell) { cell[0] += ok; cell[1]++; }
      const g = (groups[groupOf.get(row?.file?.split('/').at(-1) ?? '') ?? '?'] ??= [0, 0]);
      g[0] += ok;
      g[1]++;
    });
    const recall = Object.fromEntries(CLASSES.map((k) => [k, (right[k]?.[0] ?? 0) / (right[k]?.[1] || 1)])) as Record<(typeof CLASSES)[number], number>;
    const accuracy = CLASSES.reduce((s, k) => s + (right[k]?.[0] ?? 0), 0) / rows.length;
    const testEstimate = CLASSES.reduce((s, k) => s + recall[k] * TEST_COUNTS[k], 0) / 624;
    const byGroup = Object.fromEntries(Object.entries(groups).map(([g, [ok, n]]) => [g, ok / n]));
    results.push({ change, accuracy, recall, testEstimate, byGroup });
    process.stdout.write(`${change.padEnd(54)} accuracy ${accuracy.toFixed(3)}  recall N/B/V ${CLASSES.map((k) => recall[k].toFixed(3)).join(' / ')}  ` +
      `test estimate ${testEstimate.toFixed(3)}  ${Object.entries(byGroup).map(([g, a]) => `${g} ${a.toFixed(3)}`).join(', ')}\n`);
  }
} finally {
  loaded.model.dispose();
}
process.stdout.write(`${JSON.stringify({ model: modelDir, images: rows.length, results })}\n`);
