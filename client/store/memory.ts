/** The in-memory local data store (shared/store/memory.ts). */
export { MemoryDataStore, readJsonlRecords } from '../../shared/store/memory.js';
