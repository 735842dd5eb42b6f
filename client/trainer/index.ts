/** The client's local trainer: FedAvg updates from the job manifest's model and training spec. */
export { applyUpdate, evaluateModel, trainLocally, type LocalUpdate } from './train.js';
