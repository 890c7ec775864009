// Benchmark of transfer-learning steps: a Keras 3 MobileNetV2 as the pretrained model, frozen and fine-tuned whole,
// trained by the graph step (lib/graph-train.ts) against fused eager ops (lib/fast-train.ts), in alternated blocks.
// Run with `npm run bench:transfer`. A benchmark, not a test: it prints figures and, as its last line, one JSON object.
//
// The pretrained model is the test fixture's MobileNetV2 (alpha 0.35, Keras 3.15 topology, random weights: speed does
// not depend on them). Environment: BENCH_SIZE (input side, 128), BENCH_BATCH (32), BENCH_STEPS (timed steps per
// block, 8), BENCH_BLOCKS (blocks per engine, 3).
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LayersModel, Optimizer, Tensor } from '@tensorflow/tfjs';
import { enableFastTraining } from '../lib/fast-train.js';
import { GraphTrainer } from '../lib/graph-train.js';
import { loadTfWithInfo } from '../lib/tf.js';
import { trainStep } from '../lib/train.js';
import { buildTransferModel, holdFrozenBatchNorms } from '../lib/transfer.js';
import { mobilenet, writeKeras3Model } from '../test/helpers/keras3-fixture.js';
import { intEnv, median, round } from './util.js';

const SIZE = intEnv('BENCH_SIZE', 128);
const BATCH = intEnv('BENCH_BATCH', 32);
const STEPS = intEnv('BENCH_STEPS', 8);
const BLOCKS = intEnv('BENCH_BLOCKS', 3);

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

const { tf, info } = loadTfWithInfo();
if (info.backend !== 'tensorflow') throw new Error(`bench:transfer needs tfjs-node (the backend is ${info.backend})`);
const dir = await mkdtemp(join(tmpdir(), 'pneumotype-bench-transfer-'));
await writeKeras3Model(join(dir, 'mobilenetv2'), mobilenet);
const from = join(dir, 'mobilenetv2');
const xs = tf.randomUniform([BATCH, SIZE, SIZE, 1], 0, 1, 'float32', 1);
const ys = tf.oneHot(tf.tensor1d(Array.from({ length: BATCH }, (_, i) => i % 3), 'int32'), 3).toFloat();
const cw = tf.tensor1d([1, 1, 1]);

/** One engine's step on the fixed batch, waiting for its loss. */
type Step = () => void;

async function engines(freeze: boolean): Promise<{ eager: Step; graph: Step; dispose: () => void; trainable: number }> {
  const a: LayersModel = await buildTransferModel({ from, imageSize: SIZE, freeze });
  const b: LayersModel = await buildTransferModel({ from, imageSize: SIZE, freeze });
  const oa: Optimizer = tf.train.momentum(1e-3, 0.9, true);
  const ob: Optimizer = tf.train.momentum(1e-3, 0.9, true);
  // What train() does op by op: frozen batch norms held, fused native ops.
  const undoHold = holdFrozenBatchNorms(a);
  const undoFast = enableFastTraining(a, { optimizer: oa });
  const trainer = await GraphTrainer.create({ model: b, optimizer: ob, classWeights: [1, 1, 1], labelSmoothing: 0 });
  const wait = (r: { loss: Tensor; correct: Tensor }): void => {
    r.loss.dataSync();
    tf.dispose([r.loss, r.correct]);
  };
  return {
    eager: () => wait(trainStep({ model: a, optimizer: oa, xs, ys, classWeights: cw, labelSmoothing: 0 })),
    graph: () => wait(trainer.step(xs, ys)),
    trainable: a.trainableWeights.reduce((n, w) => n + w.read().size, 0),
    dispose: () => {
      trainer.dispose();
      undoFast();
      undoHold();
      oa.dispose();
      ob.dispose();
      a.dispose();
      b.dispose();
    },
  };
}

/** Images per second of `step`, timed over STEPS steps. */
function rate(step: Step): number {
  const t = performance.now();
  for (let i = 0; i < STEPS; i++) step();
  return (STEPS * BATCH) / ((performance.now() - t) / 1000);
}

log(`bench:transfer: ${mobilenet.about} as the pretrained model; ${SIZE} px, batch ${BATCH}, ${BLOCKS} alternated blocks of ${STEPS} steps`);
log(`machine: ${cpus().length} x ${cpus()[0]?.model ?? 'unknown CPU'}, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}; ${info.package} ${tf.version.tfjs}`);
const result: Record<string, unknown> = { model: 'MobileNetV2 alpha 0.35 (Keras 3 topology)', imageSize: SIZE, batchSize: BATCH };
try {
  for (const freeze of [true, false]) {
    const e = await engines(freeze);
    try {
      e.eager();
      e.graph();
      const eager: number[] = [];
      const graph: number[] = [];
      for (let b = 0; b < BLOCKS; b++) {
        eager.push(rate(e.eager));
        graph.push(rate(e.graph));
      }
      const figures = { trainableParameters: e.trainable, eagerImagesPerSecond: round(median(eager)), graphImagesPerSecond: round(median(graph)), ratioToEager: round(median(graph) / median(eager), 2) };
      log(`${freeze ? 'frozen' : 'fine-tuned whole'} (${e.trainable.toLocaleString('en-US')} trainable parameters): fused eager ops ${figures.eagerImagesPerSecond} images/s, graph step ${figures.graphImagesPerSecond} images/s, ${figures.ratioToEager}x`);
      result[freeze ? 'frozen' : 'fineTuned'] = figures;
    } finally {
      e.dispose();
    }
  }
} finally {
  tf.dispose([xs, ys, cw]);
  await rm(dir, { recursive: true, force: true });
}
log(JSON.stringify(result));
