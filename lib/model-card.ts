// The model card (README.md beside a model): data, preprocessing, architecture, training, metrics, intended use.
import { join } from 'node:path';
import { TRACE_AUGMENT } from './augment.js';
import { DEFAULTS, presetMatching } from './config.js';
import type { EvaluateResult, GroupMetrics } from './evaluate.js';
import { CacheError, messageOf, quote } from './errors.js';
import { maskUserInfo } from './fetch.js';
import { readJsonFile, writeFileAtomic } from './fsx.js';
import { calibrationOf, type Interval } from './metrics.js';
import { MODEL_CATALOG, resolveModelOptions, type ResolvedModelOptions } from './models.js';
import { historyIsOfCard, readCard, type EpochRecord, type ModelCard } from './train.js';

const pct = (x: number): string => (Number.isFinite(x) ? `${(100 * x).toFixed(1)} %` : 'n/a');
const ci = (i: Interval): string => `${pct(i.value)} [${pct(i.low)}, ${pct(i.high)}]`;
const num = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');
const ciNum = (i: Interval): string => `${num(i.value)} [${num(i.low)}, ${num(i.high)}]`;
/** A ResNet's blocks per stage, when not its catalog default (ResNet-18-like). */
const depthNote = (model: ResolvedModelOptions): string =>
  model.name === 'resnet' && model.depth.join(',') !== MODEL_CATALOG.resnet.defaults.depth?.join(',') ? `, blocks per stage ${model.depth.join(', ')}` : '';

/** Extra facts the card cannot read from the run: where it was trained and anything to say about it. */
export interface ModelCardExtras {
  readonly title?: string;
  readonly hardware?: string;
  /** What the data were, in a few words (e.g. "1,349 normal, 2,538 bacteria, 1,345 virus; 224 px copies"). */
  readonly data?: string;
  readonly notes?: readonly string[];
  /**
   * The evaluation is also saved beside the card as `evaluation.json`, with the predictions as `predictions.csv`
   * (scripts/ship-model.ts does): the card says so, and that `pneumotype report --run` reads them.
   */
  readonly evaluationSaved?: boolean;
}

/**
 * Renders the model card of a trained model as Markdown: pure, from the model's pneumotype.json, its training history
 * and a validation evaluation (with intervals and, when given, metrics per group).
 *
 * @example renderModelCard(card, history, evaluation, { hardware: '2 CPU cores' })
 */
export function renderModelCard(card: ModelCard, history: readonly EpochRecord[], evaluation: EvaluateResult, extras: ModelCardExtras = {}): string {
  const t = card.training;
  const c = t.config;
  const s = card.model.summary;
  // A model trained from scratch: its architecture's options, defaults filled in (a transfer model has none).
  const arch = t.initFrom === null ? resolveModelOptions(card.model) : undefined;
  const cal = calibrationOf(evaluation);
  const best = history.find((h) => h.epoch === t.epoch);
  const lines: string[] = [
    `# ${extras.title ?? 'pneumotype default model'}`,
    '',
    'A three-class classifier of pediatric chest X-rays: **normal**, **bacterial pneumonia**, **viral pneumonia**.',
    '',
    '> **Research and teaching only. Not a medical device**: it has not been validated clinically, must not be used',
    '> for diagnosis or treatment decisions, and is known to pick up traces of how images were copied (see below).',
    '',
    '## Use',
    '',
    '```sh',
    'npx pneumotype predict path/to/xray.jpeg            # {"file":…,"label":"virus","probabilities":{…}}',
    'npx pneumotype evaluate --data ChestXRay2017.zip --split test   # or its test/ folder; --data data/labeled --split val: the validation patients',
    '```',
    '',
    'Files: `model.json` + `weights.bin` (TensorFlow.js layers format: `tf.loadLayersModel` in Node or a browser),',
    '`pneumotype.json` (class order, input size, preprocessing, training configuration, data hash, validation metrics),',
    '`training-thumbnails.u8` (17 x 16 thumbnails of the training images, by which `evaluate` names any image it is',
    'given that the model trained on, or a copy of one: `seenInTraining`).',
    '',
    '## Input and preprocessing',
    '',
    `- Grayscale, squashed to ${card.imageSize}x${card.imageSize} (sharp \`fit: 'fill'\`, Lanczos 3; no crop), pixels / 255,`,
    `  shape [batch, ${card.imageSize}, ${card.imageSize}, 1]. Output: softmax over ${card.classes.join(', ')} (this order).`,
    `- \`predict\` and \`evaluate\` apply exactly this to any JPEG/PNG/WebP/TIFF of at least ${DEFAULTS.minInputSide} pixels a side (its alpha channel, if any, is dropped; an embedded ICC profile is ignored, the pixels taken as stored).`,
    '',
    '## Data',
    '',
    '- Kermany, Zhang, Goldbaum (2018), ChestXRay2017 (Mendeley Data, CC BY 4.0): the official **train** split as',
    `  relabelled by pneumotype, ${card.data.trainImages + card.data.valImages} images${extras.data ? ` (${extras.data})` : ''}; manifest SHA-256 \`${card.data.manifestSha256.slice(0, 16)}…\`.`,
    `- Validation: ${card.data.valImages} images carved from train **by patient** (no child on both sides), stratified by`,
    `  label (${pct(c.valFraction)} of patients, seed ${c.seed}); training on the other ${card.data.trainImages}.`,
    '- The official test split (624 images) was never used for training or model choice.',
    '',
    '## Architecture',
    '',
    ...(arch
      ? [
          `- \`${card.model.name}\`, width ${arch.width}${depthNote(arch)}${card.model.standardize ? ', each image standardised over its own pixels first (zero mean, unit variance)' : ''}${card.model.antialias ? ', anti-aliased downsampling (a fixed binomial blur before each subsampling after the stem)' : ''}, ${s.parameters.toLocaleString('en-US')} parameters`,
          `  (${s.trainableParameters.toLocaleString('en-US')} trainable), ${(s.flops / 1e9).toFixed(3)} GFLOPs per image, ${s.layers} layers;`,
          '  trained from scratch (no ImageNet weights).',
        ]
      : [
          `- The pretrained model \`${maskUserInfo(card.training.initFrom ?? '')}\` with a new 3-class head${card.training.featureLayer !== undefined ? ` on its layer \`${card.training.featureLayer}\`` : ''} (gray input repeated to its channels${card.training.initRange ? `, pixels mapped onto [${card.training.initRange.join(', ')}]` : ''}),`,
          `  ${s.parameters.toLocaleString('en-US')} parameters (${s.trainableParameters.toLocaleString('en-US')} trainable), ${Number.isFinite(s.flops) ? `${(s.flops / 1e9).toFixed(3)} GFLOPs` : 'unknown FLOPs'} per image: ` +
            `${card.training.freeze ? 'its layers frozen, the head trained' : card.training.unfreeze ? 'fine-tuned whole' : 'fine-tuned (layers the pretrained model marks frozen stay frozen)'}.`,
        ]),
    '',
    '## Training',
    '',
    // The card itself is written at the best epoch; the history tells how the run went on after it.
    `- ${Math.max(history.length, t.epoch)} of ${t.epochs} epochs${history.length > 0 && history.length < t.epochs ? ' (stopped early)' : ''}, ` +
      `the best validation macro-F1 at epoch ${t.epoch} (these weights), ` +
      `${trainingTime(history, t)} on ${extras.hardware ?? t.backend}.`,
    `- ${c.optimizer === 'adam' ? 'Adam' : 'SGD with Nesterov momentum 0.9'}, peak learning rate ${c.learningRate} after ${c.warmupEpochs} warm-up epoch(s), ${c.schedule} decay to ${c.minLearningRate};`,
    `  batch ${c.batchSize}; L2 ${c.weightDecay}${card.training.initFrom === null ? '' : ' (on the new head)'}; dropout ${c.dropout}; label smoothing ${c.labelSmoothing}; class weights ${c.classWeights}.`,
    `- Augmentation: ${t.augment === false ? 'none' : `\`${JSON.stringify(t.augment)}\``}.`,
    `- Backend: ${t.backend}${t.engine ? `; steps: ${t.engine}` : ''}.`,
    ...(t.weights ? [`- Saved weights: ${t.weights}.`] : []),
    ...(t.balanceGroups ? [`- Sample weights balancing the classes within each group of ${t.balanceGroups}.`] : []),
  ];
  if (best) lines.push(`- At the chosen epoch: training loss ${num(best.loss)}, accuracy ${pct(best.accuracy)}; validation loss ${num(best.valLoss)}.`);
  // The command that trains the same recipe again, where a preset has it and the augmentation is one the CLI names.
  const preset = presetMatching(c);
  const augmentFlag = t.augment === false ? ' --augment none' : JSON.stringify(t.augment) === JSON.stringify(TRACE_AUGMENT) ? '' : undefined;
  if (preset && augmentFlag !== undefined && !t.balanceGroups && !t.initFrom) {
    lines.push(
      `- The same recipe again: \`npx pneumotype train --data data/labeled --out runs/NAME --preset ${preset}${augmentFlag}\`` +
        `${card.calibration ? ', then `npx pneumotype calibrate --model runs/NAME/model --data data/labeled`' : ''}, on a labelled ` +
        `folder (\`pneumotype relabel\`) whose manifest.csv has SHA-256 ${card.data.manifestSha256.slice(0, 12)}… (these data).`,
    );
  }
  lines.push(
    '',
    `## Validation metrics (${evaluation.n} images, 95 % intervals by patient bootstrap, ${evaluation.bootstrap.resamples} resamples)`,
    '',
    '| metric | value [95 % CI] |',
    '| --- | --- |',
    `| accuracy | ${ci(evaluation.accuracy)} |`,
    `| balanced accuracy | ${ci(evaluation.balancedAccuracy)} |`,
    `| macro-F1 | ${ci(evaluation.macroF1)} |`,
    ...(['normal', 'bacteria', 'virus'] as const).map(
      (k) => `| ${k}: recall / precision / AUC | ${ci(evaluation.perClass[k].recall)} / ${ci(evaluation.perClass[k].precision)} / ${ci(evaluation.auc[k])} |`,
    ),
    `| normal vs pneumonia: accuracy / sensitivity / specificity / AUC | ${ci(evaluation.binary.normalVsPneumonia.accuracy)} / ${ci(evaluation.binary.normalVsPneumonia.sensitivity)} / ${ci(evaluation.binary.normalVsPneumonia.specificity)} / ${ci(evaluation.binary.normalVsPneumonia.auc)} |`,
    `| bacteria vs virus: accuracy / sensitivity (virus) / specificity / AUC | ${ci(evaluation.binary.bacteriaVsVirus.accuracy)} / ${ci(evaluation.binary.bacteriaVsVirus.sensitivity)} / ${ci(evaluation.binary.bacteriaVsVirus.specificity)} / ${ci(evaluation.binary.bacteriaVsVirus.auc)} |`,
    ...(cal ? [`| calibration: expected calibration error / Brier score / log loss | ${ci(cal.ece)} / ${ciNum(cal.brier)} / ${ciNum(cal.logLoss)} |`] : []),
    '',
    `Confusion matrix (rows true, columns predicted; normal, bacteria, virus): \`${JSON.stringify(evaluation.confusion)}\`.`,
    ...(extras.evaluationSaved
      ? ['', 'These figures, whole and machine-readable, are in `evaluation.json` beside this card (the output of `pneumotype evaluate',
        `--split val${evaluation.byGroup ? ' --groups …' : ''}\`), with one row per image in \`predictions.csv\`; \`pneumotype report --run\` on this folder draws them.`]
      : []),
  );
  if (card.calibration) {
    const k = card.calibration;
    lines.push(
      '',
      `Temperature scaling: the output layer's weights are divided by T = ${k.temperature.toFixed(3)}, fitted (log loss) on the ${k.images}`,
      `${k.split === 'val' ? 'validation' : k.split} images; predictions are unchanged, probabilities ${k.temperature > 1 ? 'softer' : 'sharper'}. Expected calibration error on them ${pct(k.before.ece)} before,`,
      `${pct(k.after.ece)} after (optimistic: fitted on the same images), ${pct(k.crossFitted.ece)} cross-fitted by patient (T fitted on one half, measured`,
      `on the other); log loss ${num(k.before.logLoss)} before, ${num(k.after.logLoss)} after, ${num(k.crossFitted.logLoss)} cross-fitted.${cal ? ' The metrics above are those of the calibrated model.' : ''}`,
    );
  }
  if (evaluation.byGroup) {
    lines.push(
      '',
      '### Per copy pipeline (`derived_from`): shortcut learning',
      '',
      'The shared images come from three copy pipelines whose traces correlate with the label. The full-res group holds all',
      'three classes from one pipeline and is the fairest proxy for new images.',
      '',
      '| group | n | accuracy | recall normal / bacteria / virus (support) | bacteria vs virus AUC |',
      '| --- | ---: | ---: | --- | ---: |',
      ...Object.entries(evaluation.byGroup).map(([g, m]: [string, GroupMetrics]) =>
        `| ${g} | ${m.n} | ${pct(m.accuracy)} | ${(['normal', 'bacteria', 'virus'] as const).map((k) => `${m.support[k] > 0 ? pct(m.recall[k] ?? NaN) : '—'} (${m.support[k]})`).join(' / ')} | ${typeof m.bacteriaVsVirusAuc === 'number' ? num(m.bacteriaVsVirusAuc) : '—'} |`),
    );
  }
  lines.push(
    '',
    '## Limits',
    '',
    '- Pediatric patients aged one to five from one hospital (Guangzhou); adults and other sites are out of scope.',
    '- Bacterial versus viral pneumonia is hard even for radiologists; expect most errors there.',
    t.augment === false
      ? '- The training images carry traces of three copy pipelines that correlate with the label, and this model was trained\n  without augmentation against them: part of its validation score comes from the pipeline, not the lungs.'
      : '- The training images carry traces of three copy pipelines that correlate with the label; augmentation that\n  randomises those traces was used against it, but some of the validation score may still come from them.',
    '- The official test split is held out: this project has never scored it (it is scored independently). The figures\n' +
      '  above are validation figures, and that split also chose the epoch (and the recipe, in docs/experiments.md), so\n' +
      '  they carry some selection.',
    ...(extras.notes ?? []).map((n) => `- ${n}`),
    '',
  );
  return lines.join('\n');
}

/**
 * How long training took: the history's epochs in all where they are the run that made these weights, else (a
 * history.json of a rerun, as models/default ships) the card's own time to the chosen epoch.
 */
function trainingTime(history: readonly EpochRecord[], t: ModelCard['training']): string {
  return historyIsOfCard(history, t)
    ? `${(history.reduce((sum, e) => sum + e.seconds, 0) / 60).toFixed(1)} minutes`
    : `${(t.seconds / 60).toFixed(1)} minutes to the chosen epoch`;
}

/** The input of writeModelCard. */
export interface WriteModelCardOptions {
  /** The model folder (its pneumotype.json is read, its README.md written). */
  readonly modelDir: string;
  /** The run's history.json. */
  readonly history: string;
  /** A validation evaluation of this model (evaluateModel). */
  readonly evaluation: EvaluateResult;
  readonly extras?: ModelCardExtras;
}

/** Writes `MODEL_DIR/README.md` from the model's card, the run's history.json and a validation evaluation. */
export async function writeModelCard(options: WriteModelCardOptions): Promise<string> {
  const cardPath = join(options.modelDir, 'pneumotype.json');
  const card = await readCard(cardPath);
  const history = await readJsonFile<EpochRecord[]>(options.history, (err) =>
    new CacheError(`${quote(options.history)} cannot be read as a run's history (${messageOf(err)}): expected the history.json that train writes`, { path: options.history, cause: err }));
  if (!Array.isArray(history)) throw new CacheError(`${quote(options.history)} is not a run's history: expected a list of epochs`, { path: options.history });
  const out = join(options.modelDir, 'README.md');
  await writeFileAtomic(out, renderModelCard(card, history, options.evaluation, options.extras));
  return out;
}
