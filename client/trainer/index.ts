/** The client's local trainer: FedAvg updates from the job manifest's model and training spec. */
export { applyUpdate, evaluateModel, splitHoldout, trainLocally, validateLocally, type LocalUpdate } from './train.js';
