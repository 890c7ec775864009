// The public API of pneumotype: what notebooks and other programs import (the built dist/index.js).

// Configuration, errors, progress
export { CLASSES, SPLITS, SOURCES, DEFAULTS, PRESETS, resolveConfig } from './config.js';
export type { Label, Split, EvaluationSplit, ClassCounts, KnownSource, Config, PresetName } from './config.js';
export {
  PneumotypeError, ConfigError, FetchError, IntegrityError, ArchiveError, LabelError, ImageError, CacheError, OutputError, AugmentError, BackendError, UsageError, BusyError, type LockHolder, type ErrorCode, type ErrorDetails,
} from './errors.js';
export { withLock, type LockOptions } from './lock.js';
export { ProgressTracker, type Progress, type ProgressCallback } from './progress.js';
export { createRng, shuffled, type Rng } from './random.js';

// TensorFlow.js (the only way in: picks GPU, CPU or pure JS once)
export { loadTf, loadTfWithInfo, type BackendInfo, type BackendChoice, type Tf } from './tf.js';
export { diagnose, type DoctorReport } from './doctor.js';

// Steps: fetch, extract, relabel, prepare, and the whole job
export { fetchDataset, obtainDataset, resolveSource, type FetchOptions, type FetchResult, type ObtainedDataset, type ResolvedSource, type FetchFn } from './fetch.js';
export { extractZip, listZip, chestEntryFilter, isJunkEntry, type ExtractOptions, type ExtractResult, type ArchiveSource, type ZipListing } from './zip.js';
export { extractRemoteZip, type RemoteExtractOptions, type RemoteExtractResult } from './remote-zip.js';
export { parseName, planRelabel, datasetEntryFilter, type PlanRelabelOptions, type PlannedImage, type RelabelPlan, type NameInfo } from './labels.js';
export { relabel, type RelabelOptions, type RelabelResult, type RelabelSummary } from './relabel.js';
export { readManifest, writeManifest, type ManifestRow } from './manifest.js';
export { auditLeakage, dhash, hammingDistance, type LeakageAudit, type AuditItem, type AuditLeakageOptions, type DhashOptions } from './phash.js';
export { readImageInfo, decodeGray, type ImageInfo, type ImageLimits, type DecodeOptions, type FailedImage } from './images.js';
export { patientGroupedSplit, type SplitRow, type SplitOptions } from './split.js';
export {
  prepareCache, openCache, cacheDirFor, type PrepareOptions, type PrepareResult, type CacheIndex, type CacheSplitInfo, type OpenedCache, type Subset,
  type CacheImage, type CacheFailure, type CacheSplit, type OpenCacheOptions,
} from './cache.js';
export { batches, batchIterator, toTfDataset, type Batch, type BatchOptions } from './dataset.js';
export { TRACE_AUGMENT, augmentImage, checkAugment, type AugmentOptions } from './augment.js';
export { mixBatch, sampleBeta } from './mixup.js';
export { runPipeline, prepareStep, type PipelineOptions, type PipelineResult, type PipelineStep, type PrepareStepOptions } from './pipeline.js';
export type { GroupingSource } from './balance.js';

// Models, training, evaluation, prediction
export { MODEL_CATALOG, buildModel, summarizeModel, type ModelName, type ModelOptions, type ModelSummary } from './models.js';
export { train, trainStep, regularizationLosses, learningRateAt, classWeights, checkRecipe, TrainingError, type TrainOptions, type TrainResult, type EpochRecord, type ModelCard } from './train.js';
export { buildTransferModel, holdFrozenBatchNorms, type TransferOptions } from './transfer.js';
export { fromKeras3, isKeras3Topology } from './keras3.js';
export { calibrateModel, fitTemperature, foldTemperature, temperatureScaled, type CalibrateOptions, type CalibrationRecord, type CalibrationResult, type CalibrationFigures } from './calibrate.js';
export { enableFastTraining, planFastTraining, type FastTrainingOptions, type FastTrainingPlan } from './fast-train.js';
export { GraphTrainer, planGraphTraining, type GraphTrainerOptions, type GraphTrainingPlan } from './graph-train.js';
export { WeightAverage, type WeightAverageOptions } from './ema.js';
export { renderModelCard, writeModelCard, type ModelCardExtras, type WriteModelCardOptions } from './model-card.js';
export { saveModel, loadLayersModelFromDir, type SaveModelOptions } from './checkpoint.js';
export {
  DEFAULT_MODEL_DIR, loadModel, predict, expandImagePaths, predictPixels, predictSplit, evaluateModel, evaluationSummary, metricsByGroup,
  type LoadedModel, type PredictInput, type PredictOptions, type PredictResult, type EvaluateModelOptions, type EvaluateResult, type GroupMetrics,
  type SplitPredictions,
} from './evaluate.js';
export {
  evaluatePredictions, confusionMatrix, perClassMetrics, rocAuc, rocCurve, binaryMetrics,
  CALIBRATION_BINS, calibrationOf, type Prediction, type EvaluationReport, type EvaluatePredictionsOptions, type Interval, type CalibrationBin, type CalibrationReport,
  type ClassReport, type BinaryReport, type ClassMetrics, type BinaryMetrics,
} from './metrics.js';

// S3
export { upload, UploadError, type UploadOptions, type UploadResult, type UploadManifest, type UploadSettingNames, type UploadedFile, type UploadFailure } from './upload.js';

// Serving and SageMaker
export {
  startServer, serveUntilSignal, type ServeOptions, type PredictionServer, type ServeStats, type ServeLogLine, type ServeUntilSignalOptions,
} from './serve.js';
export {
  runSageMakerTraining, runSageMakerTrainingUntilSignal, parseHyperparameters, sageMakerPaths, HYPERPARAMETERS,
  type SageMakerPaths, type SageMakerTrainingOptions, type SageMakerTrainingUntilSignalOptions, type SageMakerLogLine, type TrainingPlan,
} from './sagemaker.js';

// Figures, reports and notebook display (plotly {data, layout} objects; plotly.js runs only in the browser)
export * from './plots.js';
export { renderHtmlReport, writeRunReport, readModelEvaluation, comparisonTable, metricsTable, countsTable, groupsTable, historyTable, plotlyBundle, type ReportSection, type Table, type HtmlReportOptions, type RunReportOptions, type RunReportResult } from './report.js';
export { showFigure, showTable, liveChart, loadPlotly, forgetPlotly, type HtmlDisplay, type LiveChart } from './display.js';

// Notebook helpers: settings from the environment, live progress and training displays, data shaped for one-call cells
export * from './notebook.js';
