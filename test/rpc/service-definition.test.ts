/**
 * The grpc-js definitions built from the protobuf descriptors (shared/rpc/service.ts): a server
 * stream encodes a message object once however many streams it is written to (the coordinator
 * writes one broadcast object to every member), and decodes to what was encoded.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { describe, expect, test } from '@jest/globals';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import { serviceDefinition } from '../../shared/rpc/service.js';

describe('service definition', () => {
  test('a server stream encodes one message object once, and each new object afresh', () => {
    const subscribe = serviceDefinition(pb.SecAgg).subscribe;
    const entries = Array.from({ length: 3 }, (_, i) => create(pb.AdvertisedEntrySchema, { clientId: `c${i}`, cPk: new Uint8Array(32).fill(i), sPk: new Uint8Array(32).fill(i + 1) }));
    const broadcast = create(pb.ServerEnvelopeSchema, { message: { case: 'advertiseBroadcast', value: create(pb.AdvertiseBroadcastSchema, { entries }) } });
    const first = subscribe.responseSerialize(broadcast);
    // The same object to another member's stream: the same bytes, not encoded again.
    expect(subscribe.responseSerialize(broadcast)).toBe(first);
    expect(Buffer.compare(first, Buffer.from(toBinary(pb.ServerEnvelopeSchema, broadcast)))).toBe(0);
    expect(fromBinary(pb.ServerEnvelopeSchema, first)).toEqual(broadcast);
    // An equal but separate object is its own message.
    const copy = create(pb.ServerEnvelopeSchema, { message: { case: 'advertiseBroadcast', value: create(pb.AdvertiseBroadcastSchema, { entries }) } });
    const again = subscribe.responseSerialize(copy);
    expect(again).not.toBe(first);
    expect(Buffer.compare(again, first)).toBe(0);
    // Unary replies are fresh objects each time: encoded each time, nothing kept.
    const send = serviceDefinition(pb.SecAgg).send;
    const reply = create(pb.SendReplySchema, {});
    expect(send.responseSerialize(reply)).not.toBe(send.responseSerialize(reply));
  });
});
