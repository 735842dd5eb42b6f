/** The in-memory local data store (shared/store/memory.ts). */
export { MemoryDataStore, readExampleFile, readJsonlRecords } from '../../shared/store/memory.js';
