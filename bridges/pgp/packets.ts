// OpenPGP packet framing (RFC 4880 §4.2, unchanged in RFC 9580): just enough to find the encrypted data
// packet of a message and its body, for replay detection. No cryptography here; openpgp parses the
// packets for real.

const TAG_SEIPD = 18;
const TAG_AEAD = 20;

interface Packet {
  tag: number;
  /** The body, with partial-length chunks joined. */
  body: Uint8Array;
}

/** Splits binary OpenPGP data into packets; null if the framing is broken. */
export function splitPackets(bytes: Uint8Array): Packet[] | null {
  const r = readPackets(bytes);
  return r.complete ? r.packets : null;
}

/** The packets up to where the framing breaks, if it does (`complete` false). */
function readPackets(bytes: Uint8Array): { packets: Packet[]; complete: boolean } {
  const out: Packet[] = [];
  const broken = () => ({ packets: out, complete: false });
  let at = 0;
  const u32 = (i: number) => ((bytes[i]! << 24) >>> 0) + (bytes[i + 1]! << 16) + (bytes[i + 2]! << 8) + bytes[i + 3]!;
  while (at < bytes.length) {
    const ctb = bytes[at]!;
    if ((ctb & 0x80) === 0) return broken();
    at++;
    const chunks: Uint8Array[] = [];
    let tag: number;
    if (ctb & 0x40) {
      tag = ctb & 0x3f;
      for (;;) {
        if (at >= bytes.length) return broken();
        const l0 = bytes[at]!;
        let len: number;
        let partial = false;
        if (l0 < 192) [len, at] = [l0, at + 1];
        else if (l0 < 224) [len, at] = [((l0 - 192) << 8) + bytes[at + 1]! + 192, at + 2];
        else if (l0 === 255) [len, at] = [u32(at + 1), at + 5];
        else [len, at, partial] = [1 << (l0 & 0x1f), at + 1, true];
        if (at + len > bytes.length || Number.isNaN(len)) return broken();
        chunks.push(bytes.subarray(at, at + len));
        at += len;
        if (!partial) break;
      }
    } else {
      tag = (ctb >> 2) & 0x0f;
      const type = ctb & 3;
      let len: number;
      if (type === 0) [len, at] = [bytes[at]!, at + 1];
      else if (type === 1) [len, at] = [(bytes[at]! << 8) + bytes[at + 1]!, at + 2];
      else if (type === 2) [len, at] = [u32(at), at + 4];
      else len = bytes.length - at; // indeterminate: to the end
      if (at + len > bytes.length || Number.isNaN(len)) return broken();
      chunks.push(bytes.subarray(at, at + len));
      at += len;
    }
    out.push({ tag, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) });
  }
  return { packets: out, complete: true };
}

/** The body of a message's integrity-protected encrypted data packet (SEIPD or AEAD), or null. */
export function encryptedDataBody(bytes: Uint8Array): Uint8Array | null {
  // From the packets before a break in the framing too: openpgp skips what RFC 9580 lets it skip
  // (a trailing packet of an unknown non-critical tag, even one cut short) and decrypts the rest,
  // so a digest over the whole payload would take such a copy of a message for a new one (found
  // by the fuzz, seed 197358681). Framing is sequential: whatever openpgp can read up to its
  // encrypted data packet, this reads too.
  return readPackets(bytes).packets.find((p) => p.tag === TAG_SEIPD || p.tag === TAG_AEAD)?.body ?? null;
}
