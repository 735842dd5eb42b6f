/**
 * The files `aegis round launch` sends, read and checked before any passphrase is asked or the
 * coordinator called: the signed manifest (a DSSE envelope; a plain manifest there is refused as
 * not signed) or an unsigned one (`--manifest`, checked for structure), and `--weights`. Errors
 * name the file.
 */
import { readFile } from 'node:fs/promises';
import { readTextFile } from '../shared/cli/files.js';
import { AegisError, ErrorCode } from '../shared/errors.js';
import { parseManifest } from '../shared/protocol/manifest.js';
import { decodeSafetensors, SafetensorsError, tensorsToFlat } from '../shared/model/safetensors.js';
import { parseEnvelope } from '../shared/trust/dsse.js';

export interface LaunchFiles {
  /** The unsigned manifest's bytes (empty with a signed one). */
  manifestJson: Buffer;
  signedManifest?: Buffer;
  initialWeights?: Buffer;
}

/** The error `e` with `what` (the file) in front of its message, its hint kept or replaced. */
function naming(e: unknown, what: string, hint?: string): unknown {
  return e instanceof AegisError ? new AegisError(e.code, `${what}: ${e.message}`, hint ?? e.hint ?? null) : e;
}

export async function readLaunchFiles(signedPath: string | undefined, o: { manifest?: string; weights?: string }): Promise<LaunchFiles> {
  if ((signedPath === undefined) === (o.manifest === undefined)) {
    throw new AegisError(
      ErrorCode.InvalidArgument,
      'give the signed manifest (aegis round launch job.dsse.json) or, to a coordinator without a registry, --manifest job.json',
      'sign a manifest with aegis manifest sign; --manifest is for a coordinator started with --allow-unsigned',
    );
  }
  const files: LaunchFiles = { manifestJson: Buffer.alloc(0) };
  if (signedPath !== undefined) {
    const read = Buffer.from(await readTextFile(signedPath, '<signed-manifest>'));
    try {
      parseEnvelope(read); // malformed (or unsigned) envelopes are refused here, with their reason
    } catch (e) {
      throw naming(e, signedPath);
    }
    files.signedManifest = read;
  } else {
    files.manifestJson = Buffer.from(await readTextFile(o.manifest!, '--manifest'));
    try {
      // Structure only: the coordinator checks the dates when the round is launched.
      parseManifest(files.manifestJson, new Date(0));
    } catch (e) {
      throw naming(e, `--manifest ${o.manifest!}`, 'a manifest as aegis manifest new writes it (see docs/ml-engineer-guide.md, Training jobs)');
    }
  }
  if (o.weights) {
    try {
      files.initialWeights = await readFile(o.weights);
    } catch {
      throw new AegisError(ErrorCode.NotFound, `--weights: cannot read the initial weights ${o.weights}`, 'check the path');
    }
    if (o.weights.endsWith('.safetensors')) files.initialWeights = flatFromSafetensors(files.initialWeights, files, o.weights);
  }
  return files;
}

/**
 * Initial weights given as a safetensors file (a job for external trainers): the flat vector the
 * coordinator keeps and hashes — the manifest's declared tensors concatenated in order — checked
 * tensor by tensor.
 */
function flatFromSafetensors(bytes: Uint8Array, files: LaunchFiles, path: string): Buffer {
  const json = files.signedManifest ? Buffer.from(parseEnvelope(files.signedManifest).payload, 'base64') : files.manifestJson;
  const { manifest } = parseManifest(json, new Date(0));
  if (manifest.model?.format !== 'safetensors') {
    throw new AegisError(ErrorCode.InvalidArgument, `--weights ${path}: a safetensors file needs a manifest whose model is format safetensors`, 'give the flat float32 weights file (the tfjs weights.bin layout)');
  }
  try {
    const flat = tensorsToFlat(decodeSafetensors(bytes), manifest.model.tensors);
    return Buffer.from(flat.buffer, flat.byteOffset, flat.byteLength);
  } catch (e) {
    if (e instanceof SafetensorsError) throw new AegisError(ErrorCode.InvalidArgument, `--weights ${path}: ${e.message}`);
    throw e;
  }
}
