// Benchmark of inference with lib/evaluate.ts: single-image latency of predict (decode included) and batch throughput.
// Run with `npm run bench:infer`. A benchmark, not a test: it prints figures and, as its last line, one JSON object.
//
// Environment: BENCH_MODEL_DIR (a model folder written by `pneumotype train`; default the shipped models/default, else
// an untrained default model saved to a temp folder), BENCH_CALLS (timed single-image calls, 100), BENCH_BATCHES
// (timed batches of 32, 10), PNEUMOTYPE_SHARED_DATA (where chest_xray_train_224.zip is; ../shared/data by default).
import AdmZip from 'adm-zip';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { saveModel } from '../lib/checkpoint.js';
import { CLASSES, resolveConfig } from '../lib/config.js';
import { DEFAULT_MODEL_DIR, loadModel, predict, type PredictInput } from '../lib/evaluate.js';
import { exists } from '../lib/fsx.js';
import { buildModel, modelOptionsFromConfig, summarizeModel } from '../lib/models.js';
import { createRng } from '../lib/random.js';
import { loadTfWithInfo } from '../lib/tf.js';
import type { ModelCard } from '../lib/train.js';
import { intEnv, percentile, round } from './util.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const shared = resolve(process.env.PNEUMOTYPE_SHARED_DATA ?? join(here, '..', '..', 'shared', 'data'));
const zipPath = join(shared, 'chest_xray_train_224.zip');
const IMAGES = 48;
const BATCH = 32;
const WARMUP_CALLS = 5;

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** A few dozen real chest X-rays from the shared zip (spread over its classes), read into memory. */
function zipImages(path: string, count: number): PredictInput[] {
  const entries = new AdmZip(path).getEntries().filter((e) => !e.isDirectory && /\.jpe?g$/i.test(e.entryName));
  const step = Math.max(1, Math.floor(entries.length / count));
  const picked = entries.filter((_, i) => i % step === 0).slice(0, count);
  return picked.map((e) => ({ name: e.entryName, data: e.getData() }));
}

/** Stand-ins when the shared data are missing: grayscale JPEGs of smooth noise, 224 x 224. */
async function generatedImages(count: number, seed: number): Promise<PredictInput[]> {
  const rng = createRng(seed);
  const side = 224;
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const pixels = Buffer.alloc(side * side);
      const base = Math.floor(rng() * 128);
      for (let k = 0; k < pixels.length; k++) pixels[k] = base + Math.floor(rng() * 96) + ((k % side) >> 2);
      const data = await sharp(pixels, { raw: { width: side, height: side, channels: 1 } }).jpeg({ quality: 90 }).toBuffer();
      return { name: `generated-${i}.jpeg`, data };
    }),
  );
}

/** An untrained default (cpu preset) model with its card, saved where loadModel can read it. */
async function saveUntrainedDefault(dir: string): Promise<void> {
  const { info } = loadTfWithInfo();
  const config = resolveConfig('cpu');
  const options = modelOptionsFromConfig(config);
  const model = buildModel(options);
  try {
    const card: ModelCard = {
      format: 'pneumotype-model',
      version: 1,
      classes: CLASSES,
      imageSize: config.imageSize,
      preprocessing: { grayscale: true, resize: 'fill', kernel: 'lanczos3', scale: '1/255', channels: 1 },
      model: { ...options, summary: summarizeModel(model, options) },
      training: { config, epoch: 0, epochs: 0, seconds: 0, backend: `${info.package} (${info.backend})`, augment: false, initFrom: null },
      data: { labeledDir: '', manifestSha256: '', trainImages: 0, valImages: 0 },
      validation: { accuracy: Number.NaN, macroF1: Number.NaN, balancedAccuracy: Number.NaN, loss: Number.NaN },
      createdAt: new Date().toISOString(),
    };
    await saveModel({ dir, model, extra: { 'pneumotype.json': card } });
  } finally {
    model.dispose();
  }
}

async function main(): Promise<void> {
  const cores = availableParallelism();
  const calls = intEnv('BENCH_CALLS', 100);
  const batches = intEnv('BENCH_BATCHES', 10);
  const { tf, info } = loadTfWithInfo();
  log(`machine: ${cores} cores (${cpus()[0]?.model ?? 'unknown CPU'}), node ${process.version}, load average ${loadavg().map((l) => round(l, 2)).join(' ')}`);
  log(`tfjs: ${info.package} ${info.tfjsVersion}, backend ${info.backend}, libtensorflow ${info.libtensorflowVersion ?? 'n/a'}; sharp ${sharp.versions.sharp}`);

  let temp: string | undefined;
  let modelDir: string;
  let untrained = false;
  if (process.env.BENCH_MODEL_DIR) {
    modelDir = resolve(process.env.BENCH_MODEL_DIR);
  } else if (await exists(join(DEFAULT_MODEL_DIR, 'pneumotype.json'))) {
    modelDir = DEFAULT_MODEL_DIR;
  } else {
    temp = await mkdtemp(join(tmpdir(), 'pneumotype-bench-infer-'));
    modelDir = join(temp, 'model');
    await saveUntrainedDefault(modelDir);
    untrained = true;
    log(`model: no shipped model at ${DEFAULT_MODEL_DIR} and no BENCH_MODEL_DIR: built an UNTRAINED default (cpu preset) model ` +
      `and saved it to ${modelDir} (timings are what matter here, not its predictions)`);
  }

  try {
    let images: PredictInput[];
    let source: string;
    if (await exists(zipPath)) {
      const t = performance.now();
      images = zipImages(zipPath, IMAGES);
      source = `${images.length} JPEGs of ${zipPath}`;
      log(`images: ${source} (read in ${round(performance.now() - t)} ms, not timed)`);
    } else {
      images = await generatedImages(IMAGES, 42);
      source = `${images.length} generated 224 x 224 JPEGs`;
      log(`images: no ${zipPath} (set PNEUMOTYPE_SHARED_DATA): using ${source}`);
    }
    const first = images[0];
    const meta = first && typeof first !== 'string' ? await sharp(first.data).metadata() : undefined;
    const bytes = images.reduce((s, i) => s + (typeof i === 'string' ? 0 : i.data.length), 0);

    const loaded = await loadModel(modelDir);
    try {
      const size = loaded.card.imageSize;
      const parameters = loaded.model.countParams();
      log(`model: ${modelDir}: ${loaded.card.model.name} ${size} px, ${parameters.toLocaleString('en')} parameters${untrained ? ' (untrained)' : ''}`);
      log(`inputs: ${meta ? `${meta.width} x ${meta.height} ${meta.format}` : 'images'}, ${round(bytes / images.length / 1024)} KiB on average; decode (sharp, grayscale, resize to ${size}) included in every timing`);

      // --- single-image latency: predict(model, [one image]), one call after another
      for (let i = 0; i < WARMUP_CALLS; i++) await predict(loaded, [images[i % images.length]!]);
      // An image that fails is answered fast and would flatter every figure: the benchmark stops and names it.
      const checked = (results: Awaited<ReturnType<typeof predict>>): void => {
        const bad = results.find((r) => 'error' in r);
        if (bad && 'error' in bad) throw new Error(`predict failed on ${bad.file}: ${bad.error}; the timings would not be of real predictions`);
      };
      const latencies: number[] = [];
      for (let i = 0; i < calls; i++) {
        const t = performance.now();
        const results = await predict(loaded, [images[i % images.length]!]);
        latencies.push(performance.now() - t);
        checked(results);
      }
      const p50 = percentile(latencies, 50);
      const p95 = percentile(latencies, 95);
      const mean = latencies.reduce((a, b) => a + b, 0) / latencies.length;
      log(`single image: ${calls} calls after ${WARMUP_CALLS} warm-up: p50 ${round(p50, 2)} ms, p95 ${round(p95, 2)} ms, mean ${round(mean, 2)} ms, ` +
        `min ${round(Math.min(...latencies), 2)} ms, max ${round(Math.max(...latencies), 2)} ms`);

      // --- batch throughput: predict(model, 32 images) with batchSize 32 (decode of the 32 in parallel, one forward pass)
      const batchOf = (b: number) => Array.from({ length: BATCH }, (_, i) => images[(b * BATCH + i) % images.length]!);
      await predict(loaded, batchOf(0), { batchSize: BATCH });
      const batchSeconds: number[] = [];
      for (let b = 0; b < batches; b++) {
        const t = performance.now();
        const results = await predict(loaded, batchOf(b + 1), { batchSize: BATCH });
        batchSeconds.push((performance.now() - t) / 1000);
        checked(results);
      }
      const total = batchSeconds.reduce((a, b) => a + b, 0);
      const batchIps = (batches * BATCH) / total;
      log(`batches of ${BATCH}: ${batches} timed after 1 warm-up: ${round(batchIps)} images/s ` +
        `(${batchSeconds.map((s) => `${round(s * 1000)} ms`).join(', ')} per batch)`);
      log(`tensors left: ${tf.memory().numTensors} (the loaded model's weights)`);

      log(JSON.stringify({
        p50Ms: round(p50, 2),
        p95Ms: round(p95, 2),
        meanMs: round(mean, 2),
        batchImagesPerSecond: round(batchIps, 2),
        batchSize: BATCH,
        calls,
        batches,
        modelDir,
        untrainedModel: untrained,
        model: loaded.card.model.name,
        parameters,
        imageSize: size,
        images: source,
        inputSize: meta ? `${meta.width}x${meta.height}` : null,
        cores,
        loadAverage: loadavg().map((l) => round(l, 2)),
        tfjsBackend: `${info.package} (${info.backend})`,
        libtensorflowVersion: info.libtensorflowVersion ?? null,
      }));
    } finally {
      loaded.dispose();
    }
  } finally {
    if (temp) await rm(temp, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:infer failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
