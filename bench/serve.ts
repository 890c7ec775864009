// Benchmark of the prediction server on loopback: requests/s and latency at 1 and 16 concurrent connections (autocannon).
// Run with `npm run bench:serve`. Uses the shipped model (models/default) when there is one, else trains a throwaway
// model first; the body is a real chest X-ray from ../shared/data (or PNEUMOTYPE_SHARED_DATA), else a generated JPEG.
// BENCH_SECONDS (default 10) sets each run's length, BENCH_MODEL a model folder to use instead.
import AdmZip from 'adm-zip';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_MODEL_DIR, loadModel, type LoadedModel } from '../lib/evaluate.js';
import { exists } from '../lib/fsx.js';
import { relabel } from '../lib/relabel.js';
import { startServer } from '../lib/serve.js';
import { loadTfWithInfo } from '../lib/tf.js';
import { train } from '../lib/train.js';
import { datasetFiles, makeJpeg, writeTree } from '../test/helpers/fixtures.js';
import { intEnv, round } from './util.js';

/** The part of autocannon's API used here (the package ships no types). */
interface Histogram {
  readonly average: number;
  readonly p50: number;
  readonly p99: number;
  readonly total: number;
}
interface AutocannonResult {
  readonly requests: Histogram;
  readonly latency: Histogram;
  readonly duration: number;
  readonly errors: number;
  readonly timeouts: number;
  /** Answers with a 2xx status: what requests/s counts (a fast error answer is no served request). */
  readonly '2xx': number;
  readonly non2xx: number;
}
type Autocannon = (options: {
  url: string;
  method: 'POST';
  headers: Record<string, string>;
  body: Buffer;
  connections: number;
  duration: number;
}) => Promise<AutocannonResult>;

const here = fileURLToPath(new URL('.', import.meta.url));
const shared = resolve(process.env.PNEUMOTYPE_SHARED_DATA ?? join(here, '..', '..', 'shared', 'data'));
const SECONDS = intEnv('BENCH_SECONDS', 10);
const CONCURRENCY = [1, 16] as const;

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** A real X-ray from the shared train split, or a generated 224 px JPEG. */
function xray(): Promise<{ body: Buffer; what: string }> {
  const zip = join(shared, 'chest_xray_train_224.zip');
  try {
    const entry = new AdmZip(zip).getEntries().find((e) => !e.isDirectory && /^chest_xray\/train\/PNEUMONIA\/[^/]+\.jpe?g$/i.test(e.entryName));
    if (entry) return Promise.resolve({ body: entry.getData(), what: `${entry.entryName} from ${zip}` });
  } catch {
    // fall through to a generated image
  }
  return makeJpeg({ seed: 1, width: 224, height: 224, pattern: 'stripes' }).then((body) => ({ body, what: `a generated 224x224 JPEG (${zip} not found)` }));
}

/** The shipped model, BENCH_MODEL, or a throwaway ResNet trained for one epoch on generated images. */
async function benchModel(scratch: string): Promise<{ model: LoadedModel; what: string }> {
  const dir = process.env.BENCH_MODEL ?? DEFAULT_MODEL_DIR;
  if (await exists(join(dir, 'pneumotype.json'))) return { model: await loadModel(dir), what: `the model in ${dir}` };
  log(`no model in ${dir}: training a throwaway one (cpu preset: ResNet width 16 at 128 px, 1 epoch on generated images)`);
  await writeTree(join(scratch, 'src'), await datasetFiles({ perClass: { train: 6, test: 1 }, width: 160, height: 160 }));
  await relabel({ from: join(scratch, 'src'), out: join(scratch, 'labeled') });
  const r = await train({ data: join(scratch, 'labeled'), out: join(scratch, 'run'), preset: 'cpu', cacheDir: join(scratch, 'cache'), config: { epochs: 1 } });
  return { model: await loadModel(r.modelDir), what: 'a freshly trained throwaway model (cpu preset: same architecture and input size as a real one, meaningless predictions)' };
}

const { info } = loadTfWithInfo();
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;
const scratch = await mkdtemp(join(tmpdir(), 'pneumotype-bench-serve-'));
try {
  const { model, what } = await benchModel(scratch);
  const { body, what: image } = await xray();
  const server = await startServer({ model, host: '127.0.0.1', port: 0 });
  log(`pneumotype bench:serve on ${cpus().length} CPU(s), ${info.package} (${info.backend})`);
  log(`model: ${what}; input ${model.card.imageSize} px, ${model.card.model.name}`);
  log(`body: ${image}, ${body.length} bytes, POST /invocations as image/jpeg; ${SECONDS} s per run; load generator in the same process`);
  const headers = { 'content-type': 'image/jpeg', accept: 'application/json' };
  // Warm-up: the first predictions build kernels and allocate.
  await autocannon({ url: `${server.url}/invocations`, method: 'POST', headers, body, connections: 4, duration: 1 });
  const results: Record<string, { rps: number; p50Ms: number; p99Ms: number; errors: number; meanBatch: number }> = {};
  for (const connections of CONCURRENCY) {
    const before = { predictions: server.stats.predictions, batches: server.stats.batches };
    const r = await autocannon({ url: `${server.url}/invocations`, method: 'POST', headers, body, connections, duration: SECONDS });
    const batches = server.stats.batches - before.batches;
    const row = {
      rps: round(r['2xx'] / r.duration),
      p50Ms: round(r.latency.p50),
      p99Ms: round(r.latency.p99),
      errors: r.errors + r.non2xx,
      meanBatch: round(batches > 0 ? (server.stats.predictions - before.predictions) / batches : 0, 2),
    };
    results[`c${connections}`] = row;
    log(`${String(connections).padStart(2)} connection(s): ${row.rps} req/s, p50 ${row.p50Ms} ms, p99 ${row.p99Ms} ms, errors ${row.errors}, mean batch ${row.meanBatch}`);
  }
  await server.close();
  model.dispose();
  process.stdout.write(`${JSON.stringify(results)}\n`);
} finally {
  await rm(scratch, { recursive: true, force: true });
}
