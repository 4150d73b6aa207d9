// OMEMO 2's protobuf messages (XEP-0384 v0.8 §"Protobuf"), and its RatchetVersion for the shared
// Double Ratchet module:
//   OMEMOMessage              { n = 1; pn = 2; dh_pub = 3 (32 bytes); ciphertext = 4 (optional) }
//   OMEMOAuthenticatedMessage { mac = 1 (16 bytes); message = 2 (serialized OMEMOMessage) }
//   OMEMOKeyExchange          { pk_id = 1; spk_id = 2; ik = 3 (Ed25519); ek = 4; message = 5 (OMEMOAuthenticatedMessage) }
// The MAC covers AD || the serialized OMEMOMessage exactly as sent.
import { bytes, decode, encode, uint32 } from '../ratchet/protobuf.js';
import type { Header, MessageCodec, RatchetVersion } from '../ratchet/double-ratchet.js';
import { INFO_MESSAGE_KEYS, INFO_ROOT, MAC_LENGTH } from './constants.js';

function openWire(wire: Buffer): ReturnType<MessageCodec['open']> {
  const outer = decode(wire);
  const mac = outer && bytes(outer, 1);
  const encoded = outer && bytes(outer, 2);
  if (!mac || !encoded || mac.length !== MAC_LENGTH) return null;
  const m = decode(encoded);
  if (!m) return null;
  const n = uint32(m, 1);
  const pn = uint32(m, 2);
  const dh = bytes(m, 3);
  const ciphertext = bytes(m, 4);
  if (n === undefined || pn === undefined || !dh || dh.length !== 32 || !ciphertext || ciphertext.length === 0 || ciphertext.length % 16 !== 0) return null;
  return { encoded, mac, header: { dh, n, pn }, ciphertext };
}

export const omemo2Codec: MessageCodec = {
  encode(h: Header, ciphertext: Buffer): Buffer {
    return encode([
      { no: 1, value: h.n },
      { no: 2, value: h.pn },
      { no: 3, value: h.dh },
      { no: 4, value: ciphertext },
    ]);
  },
  seal(encoded, mac) {
    return encode([
      { no: 1, value: mac },
      { no: 2, value: encoded },
    ]);
  },
  open: openWire,
};

export const OMEMO2: RatchetVersion = {
  rootInfo: INFO_ROOT,
  messageKeyInfo: INFO_MESSAGE_KEYS,
  macLength: MAC_LENGTH,
  codec: omemo2Codec,
  maxSkipPerMessage: 1000,
  maxSkippedKeys: 1000,
};

export interface KeyExchange {
  pkId: number;
  spkId: number;
  /** Sender's Ed25519 identity key. */
  ik: Buffer;
  /** Sender's ephemeral X25519 key. */
  ek: Buffer;
  /** The OMEMOAuthenticatedMessage inside. */
  message: Buffer;
}

export function encodeKeyExchange(k: KeyExchange): Buffer {
  return encode([
    { no: 1, value: k.pkId },
    { no: 2, value: k.spkId },
    { no: 3, value: k.ik },
    { no: 4, value: k.ek },
    { no: 5, value: k.message },
  ]);
}

export function decodeKeyExchange(buf: Buffer): KeyExchange | null {
  const m = decode(buf);
  if (!m) return null;
  const pkId = uint32(m, 1);
  const spkId = uint32(m, 2);
  const ik = bytes(m, 3);
  const ek = bytes(m, 4);
  const message = bytes(m, 5);
  if (pkId === undefined || spkId === undefined || !ik || ik.length !== 32 || !ek || ek.length !== 32 || !message) return null;
  return { pkId, spkId, ik, ek, message };
}
