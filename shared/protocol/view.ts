/**
 * The round view: everything a client acts on in a round, as one 32-byte digest — the manifest
 * hash and round index, the global model's version and SHA-256 (training), the round
 * parameters, the phase deadlines, and the client's aggregation group with its members. The
 * client signs its advertised keys together with its view, and every member's view enters the
 * session id, so a coordinator that shows two clients different views (the model-inconsistency
 * attack: a crafted model for everyone but the victim; or other parameters, or another group)
 * makes them abort in phase 0, before any share or masked input leaves a client.
 *
 * Both sides compute it from the same RoundStart fields: the coordinator from each group's start
 * it sends, a client from the start it received.
 */
import { createHash } from 'node:crypto';
import { lengthPrefixed, u32be } from '../bytes.js';
import type { RoundGroup, RoundStart } from './messages.js';

const LABEL_VIEW = 'aegis/v1/round-view';

/** The fields of a round start that make its view. */
export type RoundView = Pick<RoundStart, 'round' | 'params' | 'deadlines' | 'model' | 'group'>;

function f64be(x: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setFloat64(0, x, false);
  return b;
}

/** The members of a group in one length-prefixed item (index, count, each id). */
function groupBytes(g: RoundGroup | undefined): Uint8Array {
  if (!g) return new Uint8Array(0);
  return lengthPrefixed(u32be(g.index), u32be(g.count), u32be(g.members.length), ...g.members);
}

/** SHA-256 over the length-prefixed view: 32 bytes. */
export function roundViewDigest(v: RoundView): Uint8Array {
  const p = v.params;
  const d = v.deadlines;
  const encoded = lengthPrefixed(
    LABEL_VIEW,
    v.round.manifestHash,
    u32be(v.round.roundIndex),
    lengthPrefixed(u32be(p.dim), u32be(p.cohort), u32be(p.threshold), u32be(p.neighbors), f64be(p.clip), u32be(p.bits)),
    d ? lengthPrefixed(u32be(d.advertiseMs), u32be(d.shareMs), u32be(d.maskedMs), u32be(d.consistencyMs), u32be(d.unmaskMs)) : new Uint8Array(0),
    v.model ? lengthPrefixed(u32be(v.model.version), v.model.sha256) : new Uint8Array(0),
    groupBytes(v.group),
  );
  return new Uint8Array(createHash('sha256').update(encoded).digest());
}
