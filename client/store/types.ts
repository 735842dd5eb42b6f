/**
 * The client's local data store interface (see shared/store/types.ts, where it lives so that
 * the coordinator can read its validation sets the same way).
 */
export type { DataRecord, ExampleFields, LocalDataStore, TrainingExamples } from '../../shared/store/types.js';
